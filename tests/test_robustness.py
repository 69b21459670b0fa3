"""Robustness of the served Recommender (issue 6), beyond tests/test_api_e2e.py.

One module-scoped ``bentoml serve`` with API-key auth on answers every e2e check:
50 malformed requests (tests/malformed_requests.py) each get a 4xx naming the
problem, a bounded schemathesis run finds no 5xx, every path of /docs.json but
health refuses a missing or wrong key. Fast unit checks: the request guard and
the refusal of pickles in artifact directories.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from malformed_requests import CASES, check_response
from mixrec.catalog import read_interactions
from server_harness import recommender_env, serve_bento

SERVICE = "services.recommender:Recommender"
API_KEY = "robustness-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
OPEN_PATHS = {"/livez", "/healthz", "/readyz", "/metrics"}
FUZZ_MAX_TIME_S = 25


# ---------------------------------------------------------------- one served Recommender (e2e)

@pytest.fixture(scope="module")
def server(tiny_demo, tmp_path_factory):
    state = tmp_path_factory.mktemp("robust-state")
    env = recommender_env(tiny_demo.artifacts_dir, state, MIXREC__SERVING__API_KEY=API_KEY)
    with serve_bento(SERVICE, env=env, log_dir=tmp_path_factory.mktemp("robust-logs")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def ctx(tiny_demo) -> dict:
    inter = read_interactions(tiny_demo.data_dir)
    user = Counter(i.user_id for i in inter).most_common(1)[0][0]
    return {"user": user, "item": inter[0].item_id}


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_request_gets_a_4xx_naming_the_problem(client, ctx, case):
    r = client.post(f"/{case.path}", **case.request(ctx))
    problem = check_response(case, r.status_code, r.text)
    assert problem is None, f"{case.name}: {problem}"


@pytest.mark.e2e
def test_service_answers_normally_after_malformed_requests(client, ctx):
    r = client.post("/recommend", json={"user_id": ctx["user"], "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3, r.text
    r = client.post("/recommend_by_query", json={"text": "jazz piano", "k": 2})
    assert r.status_code == 200 and len(r.json()["items"]) == 2, r.text


@pytest.mark.e2e
def test_every_path_but_health_requires_the_key(server):
    spec = httpx.get(f"{server.url}/docs.json", headers=AUTH, timeout=30).json()
    assert {"/recommend", "/feedback", "/add_item", "/info"} <= set(spec["paths"])
    wrong = []
    for path, ops in spec["paths"].items():
        for method in ops:
            for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": API_KEY}):
                r = httpx.request(method.upper(), f"{server.url}{path}", headers=headers, json={}, timeout=30)
                if (r.status_code == 401) == (path in OPEN_PATHS):
                    wrong.append((method, path, headers, r.status_code))
    assert not wrong
    assert httpx.get(f"{server.url}/docs.json", timeout=30).status_code == 401


@pytest.mark.e2e
def test_schemathesis_finds_no_server_error(server, tmp_path):
    pytest.importorskip("schemathesis")
    st = Path(sys.executable).parent / "st"
    junit = tmp_path / "st.xml"
    cmd = [str(st), "run", f"{server.url}/docs.json", "--url", server.url, "-H", f"Authorization: {AUTH['Authorization']}",
           "--checks", "not_a_server_error", "--max-examples", "2", "--seed", "1", "--max-time", str(FUZZ_MAX_TIME_S),
           "--request-timeout", "60", "--no-color", "--report", "junit", "--report-junit-path", str(junit)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FUZZ_MAX_TIME_S + 60, cwd=tmp_path)
    failures = [f"{tc.get('name')}: {(f.get('message') or '')[:300]}"
                for tc in ET.parse(junit).getroot().iter("testcase") for f in tc.findall("failure")]
    assert not failures, "\n".join(failures) + proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:]


# ---------------------------------------------------------------- request guard (unit)

def _asgi_call(app, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        sent.append(msg)

    asyncio.run(app({"type": "http", "path": "/recommend", "headers": headers}, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_request_guard_rejects_multipart_without_boundary():
    from services.request_guard import RequestGuardMiddleware

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuardMiddleware(inner)
    status, body = _asgi_call(guard, [(b"content-type", b"multipart/form-data")])
    assert status == 400 and b"boundary" in body
    assert _asgi_call(guard, [(b"content-type", b"multipart/form-data; boundary=abc")])[0] == 200
    assert _asgi_call(guard, [(b"content-type", b"application/json")])[0] == 200


def test_request_guard_refuses_a_declared_body_over_the_limit():
    from services.request_guard import RequestGuardMiddleware

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuardMiddleware(inner, max_body_bytes=1000)
    status, body = _asgi_call(guard, [(b"content-type", b"application/json"), (b"content-length", b"5000000000")])
    assert status == 413 and b"limit is 1000 bytes" in body
    assert _asgi_call(guard, [(b"content-length", b"1000")])[0] == 200


def test_file_fields_never_download_urls(monkeypatch):
    from _bentoml_impl.serde import MultipartSerde
    from bentoml.exceptions import BadInput

    from services.request_guard import harden_multipart_serde

    for name in ("ensure_file", "parse_request", "_mixrec_hardened"):  # restored after the test
        monkeypatch.setattr(MultipartSerde, name, MultipartSerde.__dict__.get(name, False), raising=False)
    harden_multipart_serde()
    with pytest.raises(BadInput, match="uploaded files"):
        asyncio.run(MultipartSerde.ensure_file("http://169.254.169.254/latest/meta-data"))


# ---------------------------------------------------------------- no pickle on any artifact path (unit)

class _Tripwire:
    """Unpickling this creates ``path``: proof that a loader ran pickle on untrusted bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from fusion.hybrid import HybridModel
    from fusion.synthetic import make_catalog
    from test_fusion_hybrid import small_config

    cat = make_catalog(n_items=60, n_users=30, seed=3)
    model = HybridModel.train(cat.items, cat.embeddings, cat.interactions, small_config(epochs=2))
    art = tmp_path_factory.mktemp("pickle-art") / "artifacts"
    model.save(art)
    return art


def test_pickles_beside_the_artifacts_are_ignored(saved_model, tmp_path):
    from services.replica import load_trained_model

    trip = tmp_path / "tripwire"
    for name in ("model.pkl", "model.pt", "lightfm.pickle"):
        (saved_model / name).write_bytes(pickle.dumps(_Tripwire(trip)))
    model = load_trained_model(str(saved_model))
    assert model.items and not trip.exists()


def test_pickled_arrays_in_the_artifacts_are_refused(saved_model, tmp_path):
    import shutil

    from fusion.artifacts import ARRAYS_DIR
    from services.replica import load_trained_model

    art = tmp_path / "artifacts"
    shutil.copytree(saved_model, art)
    trip = tmp_path / "tripwire"
    target = next((art / ARRAYS_DIR).glob("*.npy"))
    np.save(target, np.array([_Tripwire(trip)], dtype=object), allow_pickle=True)  # an object array is a pickle
    with pytest.raises(ValueError, match="allow_pickle"):
        load_trained_model(str(art))
    assert not trip.exists()


def test_no_pickle_capable_loader_in_the_product():
    root = Path(__file__).resolve().parent.parent
    hits = []
    for pkg in ("mixrec", "encoders", "fusion", "services", "tools"):
        for f in (root / pkg).rglob("*.py"):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if ("import pickle" in code or "pickle.load" in code or "allow_pickle=True" in code
                        or ("torch.load(" in code and "weights_only=True" not in code)):
                    hits.append(f"{f.relative_to(root)}:{n}")
    assert not hits, hits


# ---------------------------------------------------------------- headerless video (unit)

def _raw_h264(frames: int, rate: int = 25) -> bytes:
    """An H.264 elementary stream: no container, so no duration in any header."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def test_headerless_video_is_sampled_and_length_checked_without_decoding_it_all():
    from encoders.errors import InvalidMediaError
    from encoders.media import read_keyframes
    from mixrec.config import LimitsConfig

    data = _raw_h264(200)  # 8 s at 25 fps
    frames = read_keyframes(data, 4, LimitsConfig(), max_seconds=600)
    shades = [int(np.asarray(f)[0, 0, 0]) for f in frames]
    assert len(frames) == 4 and shades == sorted(shades) and shades[0] < 50 < 150 < shades[-1], shades
    with pytest.raises(InvalidMediaError, match="limit is 5 s"):
        read_keyframes(data, 4, LimitsConfig(), max_seconds=5)
