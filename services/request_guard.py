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

``RequestGuardMiddleware`` also caps the request body: it counts the bytes as they stream
in (a chunked body declares no length, and Transfer-Encoding beats a small Content-Length)
and answers 413 at the cap, so a 600 MB upload never reaches BentoML's ``request.body()``.
"""

from __future__ import annotations

import logging

from mixrec.errors import error_body

log = logging.getLogger("mixrec.request_guard")


class RequestGuardMiddleware:
    """Plain ASGI middleware guarding request bodies before BentoML reads them (it reads a JSON body whole).

    * 400 for a multipart Content-Type without a boundary;
    * 400 for a request carrying both Transfer-Encoding and Content-Length (the request-smuggling
      shape: two framings a proxy and this server may disagree on);
    * 413 for a declared Content-Length over ``max_body_bytes``;
    * 413 as soon as the bytes that actually stream in pass ``max_body_bytes``, whatever the headers
      said (a chunked body declares no length). The app below then receives ``http.disconnect``
      instead of the rest of the body, and any response it tries to send after the 413 is dropped.
      Body refusals close the connection (``Connection: close``): the server stops reading a body
      it refused rather than draining it.

    Every rejection is the one error body (``mixrec.errors.error_body``).
    """

    def __init__(self, app, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").lower()
        if ctype.startswith(b"multipart/") and b"boundary=" not in ctype:
            return await _reject(send, 400, "multipart request without a boundary in its Content-Type header")
        length = headers.get(b"content-length")
        if length is not None and b"transfer-encoding" in headers:
            return await _reject(send, 400, "request has both Transfer-Encoding and Content-Length headers; "
                                            "send one of them", close=True)
        limit = self.max_body_bytes
        if limit is None:
            return await self.app(scope, receive, send)
        if length is not None and length.strip().isdigit() and int(length) > limit:
            return await _reject(send, 413, f"request body is {int(length)} bytes; the limit is {limit} bytes",
                                 close=True)

        received = 0
        cut = False  # the body passed the limit: the app gets a disconnect, the client our 413
        app_started = False

        async def counted_receive():
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body") or b"")
                if received > limit:
                    cut = True
                    if not app_started:
                        await _reject(send, 413, f"request body is over {limit} bytes (counted as it streamed "
                                                 f"in); the limit is {limit} bytes", close=True)
                    log.info("request body to %s cut at %d bytes (limit %d)", scope.get("path"), received, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal app_started
            if cut:
                return  # the client already has the 413; whatever the app answers is dropped
            if message["type"] == "http.response.start":
                app_started = True
            await send(message)

        return await self.app(scope, counted_receive, guarded_send)


async def _reject(send, status: int, message: str, close: bool = False) -> None:
    """The one error body. ``close``: end the connection after it (uvicorn then stops reading a body it
    refused instead of draining it, however long the client keeps sending; an ambiguous framing is not
    followed by another request on the same connection)."""
    body = error_body(status, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"connection", b"close")] if close else headers})
    await send({"type": "http.response.body", "body": body})


async def _merge_repeated_parts(request, cls) -> None:
    """A list field sent as repeated parts (``-F tags=a -F tags=b``, OpenAPI's default array encoding in
    multipart, as generated clients send it) becomes one JSON array: BentoML's serde reads the first part only."""
    import json

    from starlette.datastructures import FormData

    form = await request.form()
    merged, changed = [], False
    for key in dict.fromkeys(form.keys()):
        values = form.getlist(key)
        if key not in cls.multipart_fields and len(values) > 1 and all(isinstance(v, str) for v in values):
            merged.append((key, json.dumps([_json_or_text(v) for v in values])))
            changed = True
        else:
            merged += [(key, v) for v in values]
    if changed:
        request._form = FormData(merged)  # starlette's cached form: what the serde's request.form() returns


def _json_or_text(value: str):
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


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
            await _merge_repeated_parts(request, cls)
            return await parse_request(self, request, cls)
        except HTTPException as e:
            if e.status_code >= 500:
                raise
            raise BadInput(f"malformed multipart body: {e.detail}") from None
        except RecursionError:
            # A form value is parsed with json.loads: "[" * 2000 nests deeper than Python recurses.
            raise BadInput("a multipart form field holds JSON nested too deeply") from None

    MultipartSerde.ensure_file = staticmethod(ensure_file)
    MultipartSerde.parse_request = parse_request_4xx
    MultipartSerde._mixrec_hardened = True
