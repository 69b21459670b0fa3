"""Optional API-key auth: a bearer token on every endpoint except health and metrics."""

from __future__ import annotations

import hmac
import json

# Probes and scrapers must work without the key.
OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})


class ApiKeyMiddleware:
    """Plain ASGI middleware (BentoML mounts it with ``Service.add_asgi_middleware``)."""

    def __init__(self, app, api_key: str) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "missing or wrong API key: send 'Authorization: Bearer <key>'"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
