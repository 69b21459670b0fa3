"""End to end over HTTP: a real ``bentoml serve services.recommender:Recommender`` subprocess.

One server (module-scoped) answers most checks; the restart test stops it and
starts a second one on the same database and state directory.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mixrec.catalog import read_interactions, read_items
from server_harness import serve_bento

pytestmark = pytest.mark.e2e
SERVICE = "services.recommender:Recommender"


def _env(tiny_demo, state: Path, **extra) -> dict[str, str]:
    return {
        "MIXREC_CONFIG": str(Path(__file__).resolve().parent.parent / "configs" / "offline.yaml"),
        "MIXREC__SERVING__ARTIFACTS": str(tiny_demo.artifacts_dir),
        "MIXREC__SERVING__STATE_DIR": str(state / "state"),
        "MIXREC__STORAGE__URL": f"sqlite:///{state / 'db.sqlite'}",
        "MIXREC__STORAGE__MEDIA_DIR": str(state / "media"),
        "MIXREC__SERVING__UPDATE_EVERY": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-state")


@pytest.fixture(scope="module")
def server(tiny_demo, state_dir, tmp_path_factory):
    with serve_bento(SERVICE, env=_env(tiny_demo, state_dir), log_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


@pytest.fixture(scope="module")
def demo(tiny_demo):
    items = read_items(tiny_demo.data_dir)
    inter = read_interactions(tiny_demo.data_dir)
    user = Counter(i.user_id for i in inter).most_common(1)[0][0]
    return {"items": items, "inter": inter, "user": user, "dir": tiny_demo.data_dir,
            "seen": {i.item_id for i in inter if i.user_id == user}}


def _png(color=(200, 30, 30), size=48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _wav(seconds=1.0, sr=16000, freq=440.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def _post(client, path, payload):
    return client.post(f"/{path}", json=payload)


def _error(r) -> str:
    return json.dumps(r.json())


def test_health_metrics_and_openapi(client):
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "bentoml" in metrics.text
    spec = client.get("/docs.json").json()
    for path in ("/recommend", "/recommend_by_query", "/similar_items", "/add_items", "/add_item",
                 "/delete_items", "/feedback", "/user_interests", "/forget_user", "/info", "/update_model"):
        assert path in spec["paths"], path


def test_info_reports_encoders_and_untrained_flags(client):
    info = _post(client, "info", {}).json()
    assert info["encoders"]["text"]["trained"] is True
    assert info["encoders"]["image"]["trained"] is False and "image" in info["untrained_encoders"]
    assert info["catalog"]["items"] == info["model"]["items"] > 0


def test_recommend_known_user_with_mix_filters_and_exclude_seen(client, demo):
    r = _post(client, "recommend", {"user_id": demo["user"], "k": 6, "mix": {"product": 2, "video": 2, "audio": 2}})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert Counter(i["type"] for i in items) == {"product": 2, "video": 2, "audio": 2}
    assert not demo["seen"] & {i["item_id"] for i in items}
    assert all(i["explanation"]["interests"] for i in items)
    r = _post(client, "recommend", {"user_id": demo["user"], "k": 3, "types": ["video"], "explain": False})
    assert {i["type"] for i in r.json()["items"]} == {"video"}
    r = _post(client, "recommend", {"user_id": demo["user"], "k": 4, "mix": "interleave", "explain": False})
    types = [i["type"] for i in r.json()["items"]]
    assert len(set(types[:3])) == 3, types


def test_python_client(server, demo, tmp_path):
    import bentoml

    with bentoml.SyncHTTPClient(server.url, timeout=120) as c:
        out = c.recommend(user_id=demo["user"], k=3)
        assert len(out["items"]) == 3
        sims = c.similar_items(item_id=out["items"][0]["item_id"], k=2, types=["audio"])
        assert [i["type"] for i in sims["items"]] == ["audio", "audio"]
        photo = tmp_path / "photo.png"
        photo.write_bytes(_png())
        by_image = c.recommend_by_query(image=[photo], k=2, types=["product"])
        assert [i["type"] for i in by_image["items"]] == ["product", "product"]


def test_query_by_text_image_and_audio(client, demo):
    r = client.post("/recommend_by_query", data={"text": demo["items"][0].title, "k": "3"})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 3 and r.json()["query"]["interests"]
    r = client.post("/recommend_by_query", files={"image": ("p.png", _png(), "image/png")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    assert r.json()["query"]["images"] == 1
    r = client.post("/recommend_by_query", files={"audio": ("a.wav", _wav(), "audio/wav")}, data={"k": "2"})
    assert r.status_code == 200, r.text
    r = _post(client, "recommend_by_query", {"image_b64": [base64.b64encode(_png()).decode()],
                                             "liked_item_ids": [demo["items"][1].item_id], "k": 4,
                                             "mix": {"product": 0.5, "audio": 0.5}})
    assert r.status_code == 200, r.text
    assert demo["items"][1].item_id not in {i["item_id"] for i in r.json()["items"]}


def test_added_item_is_recommended_by_content(client, demo):
    ref = next(it for it in demo["items"] if it.type == "product" and it.image)
    image = (Path(demo["dir"]) / ref.image).read_bytes()
    r = client.post("/add_item", data={"item_id": "e2e-new-1", "type": "product", "title": ref.title + " v2",
                                       "description": ref.description, "tags": json.dumps(ref.tags)},
                    files={"image": ("x.jpg", image, "image/jpeg")})
    assert r.status_code == 200, r.text
    r = client.post("/recommend_by_query", data={"text": ref.title + " v2. " + ref.description, "k": "3",
                                                 "explain": "false"})
    assert "e2e-new-1" in {i["item_id"] for i in r.json()["items"]}, r.text
    r = _post(client, "similar_items", {"item_id": "e2e-new-1", "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    dup = client.post("/add_item", data={"item_id": "e2e-new-1", "type": "product", "title": "again"})
    assert dup.status_code == 409 and "e2e-new-1" in _error(dup)


BAD_REQUESTS = [
    ("recommend", {"user_id": "nobody-here", "k": 3}, 404, "unknown user"),
    ("recommend", {"user_id": "{user}", "k": 0}, 400, "k must be"),
    ("recommend", {"user_id": "{user}", "k": 100000}, 400, "k must be"),
    ("recommend", {"user_id": "{user}", "k": "ten"}, 400, "k"),
    ("recommend", {"user_id": "../../etc/passwd", "k": 3}, 400, "user_id"),
    ("recommend", {"user_id": "{user}", "mix": {"podcast": 3}, "k": 3}, 400, "podcast"),
    ("recommend", {"user_id": "{user}", "mix": {"product": 1}, "k": 3}, 400, "add up"),
    ("recommend", {"user_id": "{user}", "types": ["spaceship"]}, 400, "types"),
    ("recommend", {"user_id": "{user}", "diversity": 3}, 400, "diversity"),
    ("recommend_by_query", {"k": 3}, 400, "empty query"),
    ("recommend_by_query", {"liked_item_ids": ["no-such-item"]}, 404, "no-such-item"),
    ("recommend_by_query", {"image_b64": ["!!!not base64!!!"]}, 400, "base64"),
    ("recommend_by_query", {"image_b64": [base64.b64encode(b"GIF89a-not-really").decode()]}, 400, "image"),
    # bytes that are no audio format at all are unsupported media (415), not corrupt audio (400)
    ("recommend_by_query", {"audio_b64": [base64.b64encode(b"\x00" * 64).decode()]}, 415, "audio"),
    ("similar_items", {"item_id": "no-such-item"}, 404, "no-such-item"),
    ("user_interests", {"user_id": "nobody-here"}, 404, "unknown user"),
    ("feedback", {"events": []}, 400, "empty"),
    ("feedback", {"events": [{"user_id": "u1", "item_id": "no-such-item"}]}, 404, "no-such-item"),
    ("feedback", {"events": [{"user_id": "u1", "item_id": "x", "weight": "heavy"}]}, 400, "weight"),
    ("feedback", {"events": [{"user_id": "u1", "item_id": "x", "event": "teleport"}]}, 400, "event"),
    ("add_items", {"items": [{"item_id": "b1", "type": "product", "title": ""}]}, 400, "title"),
    ("add_items", {"items": [{"item_id": "b2", "type": "product", "title": "x", "image_b64": "@@@"}]}, 400, "base64"),
    ("add_items", {"items": [{"item_id": "b3", "type": "audio", "title": "x",
                              "audio_b64": base64.b64encode(b"not audio at all" * 10).decode()}]}, 415, "b3"),
    ("delete_items", {"item_ids": []}, 400, "empty"),
    ("forget_user", {"user_id": "nobody-here"}, 404, "unknown user"),
]


@pytest.mark.parametrize("path,payload,status,needle", BAD_REQUESTS,
                         ids=[f"{p}-{i}" for i, (p, *_rest) in enumerate(BAD_REQUESTS)])
def test_bad_input_gets_a_4xx_naming_the_problem(client, demo, path, payload, status, needle):
    body = json.loads(json.dumps(payload).replace("{user}", demo["user"]))
    r = _post(client, path, body)
    assert r.status_code == status, (r.status_code, r.text)
    assert needle.lower() in r.text.lower(), r.text


def test_corrupt_and_oversized_uploads(client, demo):
    png = _png()
    r = client.post("/recommend_by_query", files={"image": ("t.png", png[: len(png) // 2], "image/png")})
    assert r.status_code == 400 and "image" in r.text.lower()
    r = client.post("/recommend_by_query", files={"audio": ("empty.wav", b"", "audio/wav")})
    assert r.status_code in (400, 413) and "audio" in r.text.lower()
    r = client.post("/add_item", data={"item_id": "big-1", "type": "product", "title": "big"},
                    files={"image": ("big.png", b"\x89PNG" + b"\x00" * (11 * 1024 * 1024), "image/png")})
    assert r.status_code == 413, r.text
    # after all of that the service still answers normally
    ok = _post(client, "recommend", {"user_id": demo["user"], "k": 2})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 2


def test_feedback_survives_a_restart(tiny_demo, tmp_path, demo):
    audio_ids = [it.item_id for it in demo["items"] if it.type == "audio"][:3]
    env = _env(tiny_demo, tmp_path)
    with serve_bento(SERVICE, env=env, log_dir=tmp_path) as srv:
        r = httpx.post(f"{srv.url}/feedback", timeout=60, json={"events": [
            {"user_id": "restart-user", "item_id": i, "event": "like", "weight": 2} for i in audio_ids]})
        assert r.status_code == 200 and r.json()["accepted"] == 3
    with serve_bento(SERVICE, env=env, log_dir=tmp_path) as srv:
        info = httpx.post(f"{srv.url}/info", json={}, timeout=60).json()
        assert info["catalog"]["interactions"] == 3
        r = httpx.post(f"{srv.url}/recommend", json={"user_id": "restart-user", "k": 3}, timeout=60)
        assert r.status_code == 200, r.text
        assert not set(audio_ids) & {i["item_id"] for i in r.json()["items"]}


def test_api_key_auth(tiny_demo, tmp_path, demo):
    env = _env(tiny_demo, tmp_path, MIXREC__SERVING__API_KEY="s3cret-key")
    with serve_bento(SERVICE, env=env, log_dir=tmp_path) as srv:
        assert httpx.get(f"{srv.url}/readyz", timeout=30).status_code == 200
        assert httpx.get(f"{srv.url}/metrics", timeout=30).status_code == 200
        body = {"user_id": demo["user"], "k": 2}
        assert httpx.post(f"{srv.url}/recommend", json=body, timeout=30).status_code == 401
        bad = httpx.post(f"{srv.url}/recommend", json=body, timeout=30, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        good = httpx.post(f"{srv.url}/recommend", json=body, timeout=60,
                          headers={"Authorization": "Bearer s3cret-key"})
        assert good.status_code == 200, good.text


def test_fresh_likes_count_at_once_and_unknown_users_are_404_or_cold(client, demo):
    """Issue 14 over HTTP: a new user's likes change the next recommend without update_model."""
    audio = [it.item_id for it in demo["items"] if it.type == "audio"][:3]
    r = client.post("/feedback", json={"events": [{"user_id": "fresh-e2e", "item_id": i, "event": "like"}
                                                  for i in audio]})
    assert r.status_code == 200, r.text
    r = client.post("/recommend", json={"user_id": "fresh-e2e", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fresh_events"] == 3 and body["cold"] is False
    assert not set(audio) & {i["item_id"] for i in body["items"]}
    reasons = [i["explanation"].get("because", "") for i in body["items"]]
    assert any(x.startswith("because you liked '") and x.endswith("just now") for x in reasons), reasons
    r = client.post("/recommend", json={"user_id": "never-seen-e2e", "k": 3})
    assert r.status_code == 404 and "recommend_by_query" in r.json()["error"]["message"]
    r = client.post("/recommend", json={"user_id": "never-seen-e2e", "k": 3, "cold": True})
    assert r.status_code == 200 and r.json()["cold"] is True and len(r.json()["items"]) == 3


def test_docs_json_is_valid_openapi_and_a_generated_client_round_trips(server, demo, tmp_path, monkeypatch):
    """/docs.json validates (openapi-spec-validator) and openapi-python-client's typed client talks to the demo."""
    import importlib
    import shutil
    import subprocess
    import sys

    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator (dev extra) absent")
    generator = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    if generator is None:
        pytest.skip("openapi-python-client (dev extra) is not installed beside this Python")
    spec = httpx.get(f"{server.url}/docs.json", timeout=60).json()
    validator.validate(spec)
    files = [s for s in _schemas(spec) if s.get("type") == "file"]
    assert not files, files  # OpenAPI has no file type: string/binary
    for path, ops in spec["paths"].items():
        if path.lstrip("/") in API_NAMES:
            schema = ops["post"]["responses"]["200"]["content"]["application/json"]["schema"]
            model = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
            assert model.get("properties") and model.get("required"), (path, model)  # typed, not a bare object

    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "gen.yaml").write_text("post_hooks: []\n")
    out = subprocess.run([generator, "generate", "--path", "spec.json", "--meta", "none", "--config", "gen.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    gen = importlib.import_module("recommender_client")
    api = importlib.import_module("recommender_client.api.service_ap_is")
    models = importlib.import_module("recommender_client.models")
    call = {name: importlib.import_module(f"{api.__name__}.recommender_{name}") for name in API_NAMES}

    with gen.Client(base_url=server.url, timeout=httpx.Timeout(120)) as c:
        recs = call["recommend"].sync(client=c, body=models.RecommendRequest(user_id=demo["user"], k=3))
        assert isinstance(recs, models.RecommendResponse), recs
        assert len(recs.items) == 3 and recs.user_id == demo["user"] and recs.cold is False
        first = recs.items[0]
        assert isinstance(first, models.RecommendedItem) and isinstance(first.score, float)

        images = [base64.b64encode(_png((60 * i, 90, 30))).decode() for i in range(2)]
        by_query = call["recommend_by_query"].sync(client=c, body=models.QueryRequest(
            text=demo["items"][0].title, image_b64=images, k=2))
        assert isinstance(by_query, models.QueryResponse), by_query
        assert len(by_query.items) == 2 and by_query.query.images == 2 and by_query.query.text is True

        fb = call["feedback"].sync(client=c, body=models.FeedbackRequest(events=[
            models.EventIn(user_id="generated-client-user", item_id=first.item_id, event="like")]))
        assert isinstance(fb, models.FeedbackResponse) and fb.accepted == 1 and len(fb.event_ids) == 1

        info = call["info"].sync(client=c)
        assert isinstance(info, models.InfoResponse) and info.catalog["items"] > 0 and info.worker_pid > 0

        missing = call["recommend"].sync(client=c, body=models.RecommendRequest(user_id="nobody-ever-seen", k=3))
        assert isinstance(missing, models.ErrorResponse) and missing.error.status == 404
        assert missing.error.code == "not_found"


def test_an_item_type_label_of_the_callers_own_is_served_counted_and_checked(client, demo):
    """Type labels are the catalogue's: an added "podcast" is recommended under its label at once
    and listed by /info (its metric series: tests/test_engine_ann.py); a label no item has is a 400
    naming the known ones, and
    a label that breaks the pattern is a 400 naming the field. Runs last in this module: the shared
    server's catalogue gains a type."""
    ref = demo["items"][0]
    r = _post(client, "add_items", {"items": [{"item_id": "pod-e2e-1", "type": "podcast", "title": ref.title,
                                               "description": ref.description}]})
    assert r.status_code == 200, r.text
    r = _post(client, "recommend", {"user_id": demo["user"], "k": 3, "types": ["podcast"], "explain": False})
    assert r.status_code == 200, r.text
    assert [(i["item_id"], i["type"]) for i in r.json()["items"]] == [("pod-e2e-1", "podcast")]
    assert "podcast" in _post(client, "info", {}).json()["model"]["item_types"]
    r = _post(client, "recommend", {"user_id": demo["user"], "k": 3, "types": ["audiobook"]})
    assert r.status_code == 400 and "audiobook" in _error(r) and "podcast" in _error(r), r.text
    r = _post(client, "add_items", {"items": [{"item_id": "bad-label", "type": "kitchen toaster", "title": "x"}]})
    assert r.status_code == 400 and "type" in _error(r), r.text


API_NAMES = ("recommend", "recommend_by_query", "similar_items", "user_interests", "add_items", "add_item",
             "delete_items", "feedback", "update_model", "forget_user", "info")


def _schemas(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _schemas(v)
    elif isinstance(node, list):
        for v in node:
            yield from _schemas(v)
