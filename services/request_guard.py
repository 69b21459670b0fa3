"""Close three holes in BentoML's request parsing that turn bad input into a 500 (found by schemathesis).

1. ``Content-Type: multipart/form-data`` without a ``boundary`` parameter makes
   starlette's form parser raise ``KeyError(b'boundary')`` inside BentoML: a 500.
   ``RequestGuardMiddleware`` answers 400 before the body is read.
2. A malformed multipart body makes starlette raise its own ``HTTPException(400)``,
   which BentoML does not recognise and answers with a 500.
3. For a file field (``image: list[Path]``) BentoML's multipart serde treats a plain
   form *value* as a URL and downloads it server-side (an SSRF vector; without
   uvloop it crashes with a 500). The Recommender only accepts uploaded files.

``harden_multipart_serde`` fixes 2 and 3 by wrapping BentoML's ``MultipartSerde``.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("mixrec.request_guard")


class RequestGuardMiddleware:
    """Plain ASGI middleware: 400 for a multipart Content-Type without boundary, 413 for a declared
    Content-Length over ``max_body_bytes`` (BentoML would read a JSON body whole into memory first)."""

    def __init__(self, app, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            ctype = headers.get(b"content-type", b"").lower()
            if ctype.startswith(b"multipart/") and b"boundary=" not in ctype:
                return await _reject(send, 400, "multipart request without a boundary in its Content-Type header")
            length = headers.get(b"content-length", b"")
            if self.max_body_bytes is not None and length.isdigit() and int(length) > self.max_body_bytes:
                return await _reject(send, 413, f"request body is {int(length)} bytes; the limit is "
                                                f"{self.max_body_bytes} bytes")
        return await self.app(scope, receive, send)


async def _reject(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def harden_multipart_serde() -> None:
    """BentoML's multipart serde: malformed bodies become 400s, file fields accept uploaded files only."""
    from bentoml.exceptions import BadInput

    try:
        from _bentoml_impl.serde import MultipartSerde
        from starlette.datastructures import UploadFile
        from starlette.exceptions import HTTPException
    except ImportError:  # a BentoML without this serde has neither problem
        log.warning("BentoML's MultipartSerde not found: multipart hardening not installed")
        return
    if getattr(MultipartSerde, "_mixrec_hardened", False):
        return
    parse_request = MultipartSerde.parse_request

    async def ensure_file(obj):
        if isinstance(obj, UploadFile):
            return obj
        raise BadInput("file fields take uploaded files (multipart file parts); URLs and plain values are refused")

    async def parse_request_4xx(self, request, cls):
        try:
            return await parse_request(self, request, cls)
        except HTTPException as e:
            if e.status_code >= 500:
                raise
            raise BadInput(f"malformed multipart body: {e.detail}") from None

    MultipartSerde.ensure_file = staticmethod(ensure_file)
    MultipartSerde.parse_request = parse_request_4xx
    MultipartSerde._mixrec_hardened = True
