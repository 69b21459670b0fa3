"""Optional API-key auth: a bearer token on every endpoint except health and metrics."""

from __future__ import annotations

import hmac

from mixrec.errors import error_body

# Probes and scrapers must work without the key; so must the demo page's own files (they hold no
# data: the page asks for the key and sends it with every API and media call) and the redirect to it.
OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics",
                        "/", "/ui", "/ui/", "/ui/index.html", "/ui/app.js", "/ui/app.css"})


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
        body = error_body(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
