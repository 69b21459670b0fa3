"""The Recommender's HTTP guards, registered in one place by ``install_http_guards``.

Order, outermost first (BentoML's own middlewares: metrics, tracing, access log, timeout
and max-concurrency, run before all of these; its context middleware after):

1. ``ErrorShapeMiddleware``: every error answer (status >= 400) leaves in the one error body
   ``{"error": {"status", "code", "message"}}`` (``mixrec.errors``), whoever wrote it:
   BentoML's ``[{"error": ...}]`` and validation ``{"error", "detail"}``, starlette's
   plain-text 404/405, CORS's refused preflight. Outermost so that it sees them all.
2. starlette's ``CORSMiddleware``, only when ``serving.allowed_origins`` is set: it answers
   preflights (which carry no API key, so it must come before the key check) and adds
   CORS headers to every answer for those origins, refusals included.
3. ``ApiKeyMiddleware`` (services/auth.py), when ``serving.api_key`` is set.
4. ``RequestGuardMiddleware`` (services/request_guard.py): body cap counted as bytes stream
   in, Transfer-Encoding with Content-Length, multipart without boundary (a malformed
   header is a 400 before any question of which media type an endpoint takes).
5. ``OriginGuardMiddleware``: cross-site requests (a browser page of another origin) are
   refused with 403 unless their origin is allowed; JSON endpoints take only
   ``application/json`` (415 otherwise), so an HTML form cannot post to them.

Plus three process-wide patches, each idempotent: bounded metrics path labels
(services/metrics_paths.py), ``ClientErrorLogFilter`` on BentoML's request-exception
logger, and the multipart serde hardening (services/request_guard.py).
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from urllib.parse import urlsplit

from mixrec.errors import ECHO_ITEMS, clip_message, error_body, shown

log = logging.getLogger("mixrec.http_guards")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPE = "application/json"
FORM_TYPES = frozenset({JSON_TYPE, "multipart/form-data", "application/x-www-form-urlencoded"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _headers(scope) -> dict[bytes, bytes]:
    return dict(scope.get("headers") or [])


async def _answer(send, status: int, message: str, extra_headers=()) -> None:
    body = error_body(status, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra_headers]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- 15. cross-site requests

def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        return netloc.lower(), None
    return (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def _normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class OriginGuardMiddleware:
    """Refuse what a browser page of another origin can send; let scripts, curl and same-origin pages pass.

    For every request but GET/HEAD/OPTIONS:

    * an ``Origin`` header that is neither this server's own origin (compared with the ``Host``
      header, host and port; the scheme is not known behind a proxy) nor in ``allowed_origins``,
      or ``Sec-Fetch-Site: cross-site`` from an origin not allowed, gets 403 naming the origin;
    * on a JSON endpoint (``json_paths``) a body that is not ``application/json`` gets 415, and on
      a form endpoint (``form_paths``) anything but JSON, multipart or urlencoded does. A request
      with no body at all may omit Content-Type.

    Requests without ``Origin`` / ``Sec-Fetch-Site`` (Python clients, curl, probes) carry no
    browser's ambient authority and pass, so multipart uploads from scripts keep working.
    """

    def __init__(self, app, json_paths=(), form_paths=(), allowed_origins=()) -> None:
        self.app = app
        self.json_paths = frozenset(json_paths)
        self.form_paths = frozenset(form_paths)
        self.allowed = frozenset(_normalise_origin(o) for o in allowed_origins)

    def _allowed_origin(self, origin: str) -> bool:
        return "*" in self.allowed or _normalise_origin(origin) in self.allowed

    @staticmethod
    def _same_origin(origin: str, host: str) -> bool:
        parts = urlsplit(origin.strip())
        if not parts.scheme or not parts.netloc or not host:
            return False  # "null" (sandboxed frames, file:// pages) is never same-origin
        return _host_port(parts.netloc, parts.scheme) == _host_port(host, parts.scheme)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method", "GET").upper() in SAFE_METHODS:
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        origin = headers.get(b"origin", b"").decode("latin-1")
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
        if origin and not self._allowed_origin(origin) and (
                site == "cross-site" or not self._same_origin(origin, headers.get(b"host", b"").decode("latin-1"))):
            return await _answer(send, 403, f"cross-site request from origin {shown(origin)} refused; "
                                            "allow it in serving.allowed_origins")
        if not origin and site == "cross-site":
            return await _answer(send, 403, "cross-site request (Sec-Fetch-Site: cross-site) refused; "
                                            "allow its origin in serving.allowed_origins")
        path = scope.get("path", "")
        if path in self.json_paths or path in self.form_paths:
            raw = headers.get(b"content-type", b"").decode("latin-1")
            media = raw.split(";")[0].strip().lower()
            accepted = {JSON_TYPE} if path in self.json_paths else FORM_TYPES
            if media not in accepted and (media or _has_body(headers)):
                want = JSON_TYPE if path in self.json_paths else ", ".join(sorted(FORM_TYPES))
                return await _answer(send, 415, f"{path} takes Content-Type {want}; got "
                                                f"{shown(raw) if raw else 'none'}")
        return await self.app(scope, receive, send)


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"").strip()
    return b"transfer-encoding" in headers or (bool(length) and length != b"0")


# ---------------------------------------------------------------- 14. one error shape

MAX_ERROR_BUFFER = 256 * 1024  # an error body longer than this is not parsed, only replaced
GENERIC_5XX = {500: "an unexpected error occurred; see the server log",
               503: "the service is unavailable; retry later",
               504: "the request took too long and was cancelled"}


def _phrase(status: int, default: str) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return default


def _already_shaped(payload) -> bool:
    err = payload.get("error") if isinstance(payload, dict) else None
    return (isinstance(err, dict) and isinstance(err.get("status"), int) and isinstance(err.get("code"), str)
            and isinstance(err.get("message"), str))


def _validation_message(payload: dict) -> str:
    problems = []
    for d in payload.get("detail") or []:
        if not isinstance(d, dict):
            continue
        loc = ".".join(str(p) for p in d.get("loc") or ()) or "body"
        problems.append(f"{loc}: {d.get('msg', 'invalid')}")
    if not problems:
        return str(payload.get("error") or "invalid request")
    more = f" (and {len(problems) - ECHO_ITEMS} more)" if len(problems) > ECHO_ITEMS else ""
    return "invalid request: " + "; ".join(problems[:ECHO_ITEMS]) + more


def error_message(status: int, body: bytes, content_type: str, scope=None, headers=None) -> str | None:
    """The message for a non-shaped error answer, or None when ``body`` already is the one shape."""
    payload = None
    if "json" in content_type or body[:1] in (b"{", b"["):
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
    if _already_shaped(payload):
        return None
    if status >= 500:
        return GENERIC_5XX.get(status) or _phrase(status, "server error")
    if isinstance(payload, list) and payload and isinstance(payload[0], dict) and "error" in payload[0]:
        payload = payload[0]
    if isinstance(payload, dict) and isinstance(payload.get("detail"), list):
        return _validation_message(payload)
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return payload["error"]
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        return payload["detail"]
    text = body.decode("utf-8", "replace").strip() if payload is None else ""
    scope = scope or {}
    if status == 404 and text in ("", "Not Found"):
        return f"no endpoint at {shown(scope.get('path', ''))}"
    if status == 405:
        allow = (headers or {}).get(b"allow", b"").decode("latin-1")
        return (f"method {scope.get('method', '?')} is not allowed on {shown(scope.get('path', ''))}"
                + (f"; use {allow}" if allow else ""))
    return text or _phrase(status, "request refused")


class ErrorShapeMiddleware:
    """Rewrite every error answer (status >= 400) not already in the one shape into it.

    Only error answers are buffered (up to ``MAX_ERROR_BUFFER`` bytes); everything else
    streams through untouched. Headers are kept but content-length and content-type. 5xx
    messages stay generic unless already in the shape (the service answers its own typed
    errors in it).
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = None  # the held http.response.start of an error answer
        chunks: list[bytes] = []
        size = 0

        async def shaped_send(message):
            nonlocal start, size
            if start is None:
                if message["type"] == "http.response.start" and message.get("status", 200) >= 400:
                    start = message
                    return
                return await send(message)
            if message["type"] != "http.response.body":
                return await send(message)
            body = message.get("body") or b""
            if size <= MAX_ERROR_BUFFER:
                chunks.append(body)
            size += len(body)
            if message.get("more_body"):
                return
            await self._send_shaped(scope, start, b"".join(chunks) if size <= MAX_ERROR_BUFFER else b"", send)

        return await self.app(scope, receive, shaped_send)

    @staticmethod
    async def _send_shaped(scope, start, body: bytes, send) -> None:
        status = int(start["status"])
        headers = list(start.get("headers") or [])
        hdict = {k.lower(): v for k, v in headers}
        ctype = hdict.get(b"content-type", b"").decode("latin-1").lower()
        message = error_message(status, body, ctype, scope, hdict)
        if message is None:  # already the one shape: as it was
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        new_body = error_body(status, clip_message(message))
        kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-type")]
        await send({**start, "headers": [*kept, (b"content-type", b"application/json"),
                                         (b"content-length", str(len(new_body)).encode())]})
        await send({"type": "http.response.body", "body": new_body})


# ---------------------------------------------------------------- 12. client errors are not server errors

# log_exception (bentoml/_internal/server/http_app.py) logs on its own module's logger; "bentoml.serve"
# is the logger of _bentoml_impl/server/app.py, covered too in case a BentoML release moves it.
REQUEST_EXCEPTION_LOGGERS = ("bentoml._internal.server.http_app", "bentoml.serve")


def client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx status of an exception that is the client's fault, else None."""
    if exc is None:
        return None
    try:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            return 400
    except ImportError:  # pragma: no cover
        pass
    try:
        from starlette.requests import ClientDisconnect

        if isinstance(exc, ClientDisconnect):  # the client went away (or the body cap cut its body)
            return 499
    except ImportError:  # pragma: no cover
        pass
    try:
        from bentoml.exceptions import BentoMLException

        if isinstance(exc, BentoMLException):
            code = int(getattr(exc, "error_code", 500))
            return code if 400 <= code < 500 else None
    except ImportError:  # pragma: no cover
        pass
    status = getattr(exc, "status", None)  # mixrec.errors.MixrecError
    from mixrec.errors import MixrecError

    if isinstance(exc, MixrecError) and isinstance(status, int) and 400 <= status < 500:
        return status
    return None


class ClientErrorLogFilter(logging.Filter):
    """BentoML logs every failed request at ERROR with a traceback; a client's mistake is INFO, one line.

    Records at ERROR or above whose exception is a pydantic ``ValidationError``, a
    ``BentoMLException`` with a 4xx ``error_code``, a 4xx ``MixrecError`` or starlette's
    ``ClientDisconnect`` become INFO without traceback (their message says the status and
    the exception). Everything else, real 5xx included, passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.exc_info or record.exc_info is True:
            return True
        exc = record.exc_info[1]
        status = client_error_status(exc)
        if status is None:
            return True
        text = clip_message(" ".join(str(exc).split()), 500)
        record.msg = f"{record.getMessage()}: client error {status} ({type(exc).__name__}{': ' if text else ''}{text})"
        record.args = None
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.exc_info, record.exc_text = None, None
        return True


def install_client_error_log_filter() -> None:
    for name in REQUEST_EXCEPTION_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
            logger.addFilter(ClientErrorLogFilter())


# ---------------------------------------------------------------- registration

def max_body_bytes(config) -> int:
    """The largest legitimate body: the biggest medium as base64, plus room for the JSON around it."""
    lim = config.limits
    return max(lim.max_video_bytes, lim.max_image_bytes, lim.max_audio_bytes) * 4 // 3 + 16 * 1024 * 1024


def api_paths(service) -> tuple[set[str], set[str]]:
    """(JSON-only paths, paths that also take multipart / urlencoded forms) of ``service``'s APIs."""
    from bentoml._internal.utils.uri import join_paths

    prefix = getattr(service, "path_prefix", None) or ""
    json_paths, form_paths = set(), set()
    for api in service.apis.values():
        path = join_paths(prefix, api.route)
        (form_paths if getattr(api.input_spec, "multipart_fields", None) else json_paths).add(path)
    return json_paths, form_paths


def install_http_guards(service, config) -> None:
    """Register every HTTP guard on ``service`` (a BentoML service) in order, and the process-wide patches.

    ``add_asgi_middleware`` appends, and BentoML mounts the list with the first entry outermost.
    """
    from services.auth import ApiKeyMiddleware
    from services.metrics_paths import install_bounded_metrics_paths
    from services.request_guard import RequestGuardMiddleware, harden_multipart_serde

    serving = config.serving
    json_paths, form_paths = api_paths(service)
    service.add_asgi_middleware(ErrorShapeMiddleware)
    if serving.allowed_origins:
        from starlette.middleware.cors import CORSMiddleware

        service.add_asgi_middleware(CORSMiddleware, allow_origins=list(serving.allowed_origins),
                                    allow_methods=["GET", "POST", "OPTIONS"],
                                    allow_headers=["Authorization", "Content-Type"], max_age=600)
    if serving.api_key:
        service.add_asgi_middleware(ApiKeyMiddleware, api_key=serving.api_key)
    service.add_asgi_middleware(RequestGuardMiddleware, max_body_bytes=max_body_bytes(config))
    service.add_asgi_middleware(OriginGuardMiddleware, json_paths=sorted(json_paths), form_paths=sorted(form_paths),
                                allowed_origins=list(serving.allowed_origins))
    install_bounded_metrics_paths()
    install_client_error_log_filter()
    harden_multipart_serde()


def error_response(endpoint: str, e: BaseException):
    """The one error answer: a typed ``MixrecError`` gets its own status; anything else is a bug (500).

    Client errors are logged at INFO without a traceback; server errors at ERROR with one traceback.
    """
    from bentoml.exceptions import BentoMLException
    from starlette.responses import JSONResponse

    from mixrec.errors import MixrecError, error_payload

    log = logging.getLogger("mixrec.recommender")  # the API's own logger, whoever answers

    if isinstance(e, MixrecError):
        status, message, code = e.status, str(e), e.code
    elif isinstance(e, BentoMLException):  # BentoML's own typed errors (e.g. BadInput while parsing)
        status, message, code = int(e.error_code), str(e), None
    else:
        status, message, code = 500, "unexpected server error; it was logged with its traceback", None
    if status >= 500:
        log.error("%s answered %d: %s", endpoint, status, message, exc_info=e)
    else:
        log.info("%s answered %d: %s", endpoint, status, message)
    return JSONResponse(error_payload(status, message, code), status_code=status)
