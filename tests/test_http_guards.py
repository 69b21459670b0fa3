"""HTTP guards of the served Recommender (issue "Trust", items 8, 9, 12, 14, 15).

Fast unit checks drive the ASGI middlewares (services/http_guards.py,
services/request_guard.py, services/auth.py, services/metrics_paths.py) and the log
filter directly. The e2e checks share ONE module-scoped ``bentoml serve`` without an
API key (the default, the configuration a cross-site page can attack), with small media
limits so that the body cap is ~17 MB, and one allowed browser origin:

* 8: a chunked body over the cap gets 413 and the server's memory stays bounded;
* 9: 300 random paths do not grow /metrics by a series each;
* 14: every error answer has the one body shape;
* 15: cross-site posts are refused, scripts and allowed origins pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from server_harness import recommender_env, serve_bento

SERVICE = "services.recommender:Recommender"
ALLOWED_ORIGIN = "http://allowed.example"
EVIL_ORIGIN = "http://evil.example"
MEDIA_LIMIT = 1024 * 1024  # max image / audio / video bytes in the served config
MB = 1024 * 1024


def _one_shape(body, status: int) -> str:
    """The message of a body in the one error shape; fails the test otherwise."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert err["status"] == status and isinstance(err["code"], str) and isinstance(err["message"], str), body
    return err["message"]


# ================================================================ unit: ASGI middlewares

class Recorder:
    """An inner ASGI app that records what it received and answers with a scripted response."""

    def __init__(self, status: int = 200, body: bytes = b"ok", headers=None, chunks=None, read_body=True):
        self.status, self.body, self.chunks, self.read_body = status, body, chunks, read_body
        self.headers = headers if headers is not None else [(b"content-type", b"text/plain")]
        self.received: list[dict] = []
        self.called = False

    async def __call__(self, scope, receive, send):
        self.called = True
        if self.read_body:
            while True:
                msg = await receive()
                self.received.append(msg)
                if msg["type"] == "http.disconnect" or not msg.get("more_body"):
                    break
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        for i, chunk in enumerate(self.chunks or [self.body]):
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": i < len(self.chunks or [self.body]) - 1})

    @property
    def body_bytes(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.received if m["type"] == "http.request")


def call(app, *, path="/recommend", method="POST", headers=(), chunks=(b"",)):
    """Run ``app`` on one request whose body arrives in ``chunks``; return (status, headers, body, messages)."""
    sent: list[dict] = []
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": path, "headers": [(k.lower(), v) for k, v in headers]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start.get("headers") or []), body, sent


# ---------------------------------------------------------------- 8. body cap

def test_body_cap_counts_streamed_bytes_and_cuts_the_app_off():
    from services.request_guard import RequestGuardMiddleware

    inner = Recorder(status=500, body=b"the app must not be heard")
    guard = RequestGuardMiddleware(inner, max_body_bytes=1000)
    status, headers, body, sent = call(guard, headers=[(b"transfer-encoding", b"chunked")], chunks=[b"x" * 400] * 10)
    assert status == 413 and headers[b"connection"] == b"close"  # uvicorn stops reading the rest
    assert "limit is 1000 bytes" in _one_shape(json.loads(body), 413)
    assert len([m for m in sent if m["type"] == "http.response.start"]) == 1  # the app's 500 was dropped
    assert inner.received[-1] == {"type": "http.disconnect"}
    assert len(inner.body_bytes) <= 1000  # the app never got the body past the cap


def test_body_cap_lets_a_body_at_the_limit_through_whole():
    from services.request_guard import RequestGuardMiddleware

    inner = Recorder()
    status, _, body, _ = call(RequestGuardMiddleware(inner, max_body_bytes=1000),
                              headers=[(b"transfer-encoding", b"chunked")], chunks=[b"x" * 250] * 4)
    assert status == 200 and body == b"ok" and inner.body_bytes == b"x" * 1000


def test_transfer_encoding_with_content_length_is_refused():
    from services.request_guard import RequestGuardMiddleware

    inner = Recorder()
    status, _, body, _ = call(RequestGuardMiddleware(inner, max_body_bytes=10 ** 9),
                              headers=[(b"transfer-encoding", b"chunked"), (b"content-length", b"5")],
                              chunks=[b"x" * 50])
    assert status == 400 and not inner.called
    assert "Transfer-Encoding and Content-Length" in _one_shape(json.loads(body), 400)


def test_request_guard_and_auth_answer_the_one_shape():
    from services.auth import ApiKeyMiddleware
    from services.request_guard import RequestGuardMiddleware

    status, _, body, _ = call(RequestGuardMiddleware(Recorder()), headers=[(b"content-type", b"multipart/form-data")])
    assert status == 400 and "boundary" in _one_shape(json.loads(body), 400)
    status, headers, body, _ = call(ApiKeyMiddleware(Recorder(), api_key="k"))
    assert status == 401 and "API key" in _one_shape(json.loads(body), 401)
    assert headers[b"www-authenticate"] == b"Bearer"


# ---------------------------------------------------------------- 14. one error shape

def _shaped(status, body, headers=None, **kw):
    from services.http_guards import ErrorShapeMiddleware

    return call(ErrorShapeMiddleware(Recorder(status=status, body=body, read_body=False,
                                              headers=headers or [(b"content-type", b"application/json")])), **kw)


def test_bentoml_list_error_becomes_the_one_shape():
    status, headers, body, _ = _shaped(404, b'[{"error": "unknown user \'u-1\'"}]',
                                       headers=[(b"content-type", b"application/json"), (b"content-length", b"31"),
                                                (b"x-bentoml-request-id", b"abc")])
    assert status == 404 and _one_shape(json.loads(body), 404) == "unknown user 'u-1'"
    assert json.loads(body)["error"]["code"] == "not_found"
    assert headers[b"x-bentoml-request-id"] == b"abc"  # other headers kept
    assert headers[b"content-length"] == str(len(body)).encode()


def test_validation_error_becomes_a_message_naming_the_fields():
    detail = {"error": "2 validation errors for Input",
              "detail": [{"type": "string_type", "loc": ["user_id"], "msg": "Input should be a valid string"},
                         {"type": "extra_forbidden", "loc": ["events", 0, "rating"],
                          "msg": "Extra inputs are not permitted"}]}
    status, _, body, _ = _shaped(400, json.dumps(detail).encode())
    msg = _one_shape(json.loads(body), 400)
    assert "user_id: Input should be a valid string" in msg and "events.0.rating: Extra inputs" in msg


def test_plain_text_404_405_and_generic_5xx():
    status, _, body, _ = _shaped(404, b"Not Found", headers=[(b"content-type", b"text/plain; charset=utf-8")],
                                 path="/nope")
    assert "/nope" in _one_shape(json.loads(body), 404)
    status, _, body, _ = _shaped(405, b"Method Not Allowed", method="GET",
                                 headers=[(b"content-type", b"text/plain"), (b"allow", b"POST")])
    assert "POST" in _one_shape(json.loads(body), 405)
    status, _, body, _ = _shaped(500, b'{"error": "Traceback: secret internals"}')
    assert "secret" not in _one_shape(json.loads(body), 500)


def test_shaped_errors_and_successes_pass_untouched():
    from mixrec.errors import error_body

    shaped = error_body(409, "item 'a' already exists")
    assert _shaped(409, shaped)[2] == shaped
    from services.http_guards import ErrorShapeMiddleware

    inner = Recorder(chunks=[b"a", b"b", b"c"], headers=[(b"content-type", b"application/json")])
    status, _, body, sent = call(ErrorShapeMiddleware(inner))
    assert status == 200 and body == b"abc"
    assert [m.get("more_body") for m in sent[1:]] == [True, True, False]  # streamed, not buffered


# ---------------------------------------------------------------- 15. origin guard

def _guard(inner, allowed=()):
    from services.http_guards import OriginGuardMiddleware

    return OriginGuardMiddleware(inner, json_paths=["/delete_items", "/info"], form_paths=["/add_item"],
                                 allowed_origins=allowed)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x"])
def test_json_endpoints_refuse_what_a_form_can_send(ctype):
    inner = Recorder()
    status, _, body, _ = call(_guard(inner), path="/delete_items",
                              headers=[(b"content-type", ctype.encode()), (b"content-length", b"20")])
    assert status == 415 and not inner.called
    assert "application/json" in _one_shape(json.loads(body), 415)


def test_cross_site_origin_is_refused_and_scripts_pass():
    multipart = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"100"),
                 (b"host", b"127.0.0.1:3000")]
    inner = Recorder()
    status, _, body, _ = call(_guard(inner), path="/add_item", headers=[*multipart, (b"origin", EVIL_ORIGIN.encode())])
    assert status == 403 and not inner.called and "evil.example" in _one_shape(json.loads(body), 403)
    status, *_ = call(_guard(Recorder()), path="/add_item",
                      headers=[*multipart, (b"origin", b"http://127.0.0.1:3000"), (b"sec-fetch-site", b"cross-site")])
    assert status == 403
    assert call(_guard(Recorder()), path="/add_item", headers=multipart)[0] == 200  # no Origin: a script
    assert call(_guard(Recorder()), path="/add_item",
                headers=[*multipart, (b"origin", b"http://127.0.0.1:3000"), (b"sec-fetch-site", b"same-origin")])[0] == 200
    assert call(_guard(Recorder(), allowed=[ALLOWED_ORIGIN]), path="/add_item",
                headers=[*multipart, (b"origin", ALLOWED_ORIGIN.encode()), (b"sec-fetch-site", b"cross-site")])[0] == 200
    assert call(_guard(Recorder()), path="/metrics", method="GET",
                headers=[(b"origin", EVIL_ORIGIN.encode())])[0] == 200  # reads are not guarded
    assert call(_guard(Recorder()), path="/info", headers=[])[0] == 200  # no body needs no Content-Type


# ---------------------------------------------------------------- 9. metrics path labels

def test_metrics_label_is_the_route_or_one_unknown_label():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from services.metrics_paths import UNKNOWN_PATH, metrics_path

    ok = lambda request: PlainTextResponse("ok")  # noqa: E731
    app = Starlette(routes=[Route("/recommend", ok, methods=["POST"]), Route("/readyz", ok),
                            Mount("/static_content", routes=[Route("/{name}", ok)])])
    label = lambda path, method="POST": metrics_path({"type": "http", "path": path, "method": method,  # noqa: E731
                                                      "root_path": "", "app": app})
    assert label("/recommend") == "/recommend"
    assert label("/recommend", "GET") == "/recommend"  # a 405 still names the route
    assert label("/readyz", "GET") == "/readyz"
    assert label("/static_content/x.js", "GET") == "/static_content"
    assert label(f"/{uuid.uuid4().hex}") == UNKNOWN_PATH


def test_bentoml_metrics_middleware_is_the_bounded_one():
    from _bentoml_impl.server.app import ServiceAppFactory  # noqa: F401  (the module that imports it)
    from bentoml._internal.server.http import instruments

    import services.recommender  # noqa: F401  (installs the guards)

    assert getattr(instruments.RunnerTrafficMetricsMiddleware, "_mixrec_bounded_paths", False)


# ---------------------------------------------------------------- 12. client errors logged as INFO

def _record(exc: BaseException, level=logging.ERROR) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        return logging.LogRecord("bentoml._internal.server.http_app", level, __file__, 1, "Exception on %s [%s]",
                                 ("/recommend", "POST"), sys.exc_info())


def _validation_error():
    from pydantic import BaseModel

    class Input(BaseModel):
        k: int

    try:
        Input(k="x")
    except Exception as e:  # pydantic.ValidationError
        return e


@pytest.mark.parametrize("make", [_validation_error, lambda: __import__("bentoml.exceptions").exceptions.BadInput("bad k"),
                                  lambda: __import__("bentoml.exceptions").exceptions.NotFound("no such user")],
                         ids=["validation", "bad-input-400", "not-found-404"])
def test_client_errors_are_logged_as_info_without_traceback(make):
    from services.http_guards import ClientErrorLogFilter

    rec = _record(make())
    assert ClientErrorLogFilter().filter(rec) is True
    assert rec.levelno == logging.INFO and rec.levelname == "INFO" and rec.exc_info is None
    assert "/recommend" in rec.getMessage() and "client error 4" in rec.getMessage()


def test_server_errors_keep_their_error_and_traceback():
    from bentoml.exceptions import InternalServerError

    from services.http_guards import ClientErrorLogFilter

    for exc in (RuntimeError("boom"), InternalServerError("boom")):
        rec = _record(exc)
        assert ClientErrorLogFilter().filter(rec) is True
        assert rec.levelno == logging.ERROR and rec.exc_info is not None and rec.exc_info[1] is exc


def test_log_filter_is_installed_on_the_logger_bentoml_uses():
    from bentoml._internal.server import http_app

    import services.recommender  # noqa: F401
    from services.http_guards import ClientErrorLogFilter

    assert any(isinstance(f, ClientErrorLogFilter) for f in http_app.logger.filters)


# ================================================================ e2e: one served Recommender

@pytest.fixture(scope="module")
def server(tiny_demo, tmp_path_factory):
    state = tmp_path_factory.mktemp("guards-state")
    env = recommender_env(tiny_demo.artifacts_dir, state,
                          MIXREC__SERVING__ALLOWED_ORIGINS=json.dumps([ALLOWED_ORIGIN]),
                          MIXREC__LIMITS__MAX_VIDEO_BYTES=str(MEDIA_LIMIT),
                          MIXREC__LIMITS__MAX_IMAGE_BYTES=str(MEDIA_LIMIT),
                          MIXREC__LIMITS__MAX_AUDIO_BYTES=str(MEDIA_LIMIT))
    with serve_bento(SERVICE, env=env, log_dir=tmp_path_factory.mktemp("guards-logs")) as srv:
        yield srv


def _cap() -> int:
    from services.http_guards import max_body_bytes
    from services.settings import CONFIG

    return max_body_bytes(CONFIG.model_copy(update={"limits": CONFIG.limits.model_copy(update={
        "max_video_bytes": MEDIA_LIMIT, "max_image_bytes": MEDIA_LIMIT, "max_audio_bytes": MEDIA_LIMIT})}))


def _server_procs(server) -> list[psutil.Process]:
    server.tree.track()
    procs = [psutil.Process(server.tree.pid)]
    procs += psutil.Process(server.tree.pid).children(recursive=True)
    return procs


def _status_kb(proc: psutil.Process, field: str) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(proc: psutil.Process) -> bool:
    try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _add_item(client, item_id: str, **kw):
    return client.post("/add_items", json={"items": [{"item_id": item_id, "type": "product", "title": "guard probe"}]},
                       **kw)


def _exists(client, item_id: str) -> bool:
    r = client.post("/similar_items", json={"item_id": item_id, "k": 1})
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


@pytest.mark.e2e
def test_chunked_body_over_the_cap_gets_413_and_memory_stays_bounded(server, client):
    cap = _cap()
    procs = _server_procs(server)
    peaks_reset = all(_reset_peak(p) for p in procs)
    before = {p.pid: _status_kb(p, "VmHWM" if peaks_reset else "VmRSS") for p in procs}
    sent = 0

    def body():  # a JSON body that never declares its length: 3x the cap, 1 MB at a time
        nonlocal sent
        yield b'{"items": [{"item_id": "huge", "type": "video", "title": "x", "video_b64": "'
        while sent < 3 * cap:
            sent += MB
            yield b"A" * MB
        yield b'"}]}'

    r = client.post("/add_items", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text[:300]
    assert f"limit is {cap} bytes" in _one_shape(r.json(), 413)
    grown_mb = sum(_status_kb(p, "VmHWM" if peaks_reset else "VmRSS") - before[p.pid] for p in procs) / 1024
    # Buffering the body costs 3x the cap or more (108 MB before the fix); the guard lets at most the cap through.
    assert grown_mb < 2 * cap / MB, f"server memory grew {grown_mb:.0f} MB for a {sent / MB:.0f} MB body"
    r = client.post("/info", json={})
    assert r.status_code == 200, r.text


@pytest.mark.e2e
def test_transfer_encoding_with_content_length_is_refused_by_the_server(server):
    request = (f"POST /info HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(request.encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]


@pytest.mark.e2e
def test_random_paths_do_not_grow_metrics(server, client):
    def metrics() -> str:
        return httpx.get(f"{server.url}/metrics", timeout=30).text

    client.post(f"/warm-{uuid.uuid4().hex}", json={})  # the unknown label's series exist from here on
    before = metrics()
    paths = [f"/{uuid.uuid4().hex}" for _ in range(300)]
    for path in paths:
        assert client.post(path, json={}).status_code == 404
    after = metrics()
    # Counted in series (name + labels), not bytes: a request of an earlier test still finishing
    # (a disconnected add_items encodes on) may add its own series under load; 300 paths must not
    # add anything like one series each.
    new_series = series(after) - series(before)
    assert len(new_series) < 100, f"{len(new_series)} new series, e.g. {sorted(new_series)[:5]}"
    assert not any(p in after for p in paths)
    assert "/__unknown__" in after


def series(metrics_text: str) -> set[str]:
    """The series of a Prometheus text exposition: each sample line's name and labels, without its value."""
    return {line.rsplit(" ", 1)[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}


@pytest.mark.e2e
def test_every_error_answer_has_the_one_shape(client):
    checks = [
        (client.post("/recommend", json={"user_id": 12345}), 400, "user_id"),  # validation error
        (client.post("/similar_items", json={"item_id": "x", "k": "many"}), 400, "k"),
        (client.post(f"/no-such-{uuid.uuid4().hex[:6]}", json={}), 404, "no-such"),  # starlette's plain text
        (client.get("/recommend"), 405, "POST"),
        (client.post("/recommend", content=b"hello", headers={"content-type": "text/plain"}), 415,
         "application/json"),
    ]
    for r, status, needle in checks:
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert needle in _one_shape(r.json(), status), r.text


@pytest.mark.e2e
def test_client_errors_are_logged_without_traceback(server, client):
    # 12: BentoML logs every failed request at ERROR with a traceback; a client's mistake is one INFO line.
    assert client.post("/recommend", json={"user_id": 12345}).status_code == 400
    log = server.log_path.read_text(errors="replace")
    assert "client error 400 (ValidationError" in log
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]


@pytest.mark.e2e
@pytest.mark.parametrize("form", ["text-plain", "urlencoded"])
def test_form_posts_cannot_delete_items(client, form):
    item = f"guard-del-{uuid.uuid4().hex[:8]}"
    assert _add_item(client, item).status_code == 200
    if form == "text-plain":  # what <form enctype="text/plain"> or a no-cors fetch of a string sends
        r = client.post("/delete_items", content=json.dumps({"item_ids": [item]}).encode(),
                        headers={"content-type": "text/plain"})
    else:
        r = client.post("/delete_items", data={"item_ids": item})
    assert r.status_code == 415, r.text
    assert "application/json" in _one_shape(r.json(), 415)
    assert _exists(client, item)


@pytest.mark.e2e
def test_cross_site_multipart_upload_is_refused_and_scripts_pass(client):
    item = f"guard-add-{uuid.uuid4().hex[:8]}"
    form = {"item_id": item, "type": "product", "title": "cross-site probe"}
    files = {"image": ("p.png", _png(), "image/png")}
    r = client.post("/add_item", data=form, files=files, headers={"Origin": EVIL_ORIGIN})
    assert r.status_code == 403, r.text
    assert "evil.example" in _one_shape(r.json(), 403)
    assert not _exists(client, item)
    r = client.post("/add_item", data=form, files={"image": ("p.png", _png(), "image/png")})
    assert r.status_code == 200, r.text
    assert _exists(client, item)


@pytest.mark.e2e
def test_allowed_origin_passes_with_cors_headers(server, client):
    pre = client.options("/feedback", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200, pre.text
    assert pre.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    r = client.post("/info", json={}, headers={"Origin": ALLOWED_ORIGIN, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    r = client.post("/info", json={}, headers={"Origin": EVIL_ORIGIN})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    same = f"http://127.0.0.1:{server.port}"
    assert client.post("/info", json={}, headers={"Origin": same, "Sec-Fetch-Site": "same-origin"}).status_code == 200


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()
