"""The Python API (tools/api/): in-memory data, cached encoding, fit, batch scoring, evaluation, model store.

Tiny encoders built from configs (random weights, no download) and tiny LightFM settings; the README's
worked example runs as written (it uses the offline config's installed MiniLM).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fusion.features import FeatureWeights

from fusion.snapshot import UnknownUserError
from mixrec.config import ConfigError, config_from_dict
from mixrec.errors import InputError
from tools import api as mixrec

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(no_components=8, epochs=5, shared_dim=8, codebook_size=4, num_threads=1)
GENRES = ["jazz", "hiking", "cooking", "scifi"]


def tiny_config():
    return config_from_dict({"encoders": {
        "text": {"kind": "hf-text", "model": "mixrec-tiny-bert", "weights": "random", "device": "cpu", "batch_size": 4},
        "image": {"kind": "open-clip", "model": "mixrec-tiny-clip", "weights": "random", "device": "cpu"},
        "audio": {"kind": "hf-audio", "model": "mixrec-tiny-clap", "weights": "random", "device": "cpu"},
    }, "video": {"keyframes": 2}}, environ={})


def item_rows(n: int = 24) -> list[dict]:
    return [{"item_id": i, "type": ("product", "video", "audio")[i % 3], "title": f"{GENRES[i % 4]} item {i}" + " x" * ((i * 7) % n),
             "tags": [GENRES[i % 4]]} for i in range(n)]


def event_rows(n_items: int = 24, n_users: int = 20) -> list[dict]:
    return [{"user_id": f"u{u}", "item_id": i, "event": "like", "timestamp": float(i)}
            for u in range(n_users) for i in range(n_items) if i % 4 == u % 4 and (i + u) % 3]


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.fixture(scope="module")
def catalog():
    return mixrec.items(item_rows())


@pytest.fixture(scope="module")
def emb(catalog, cfg):
    return mixrec.encode_items(catalog, cfg, cache_dir=None, progress=False)


@pytest.fixture(scope="module")
def model(catalog, emb, cfg):
    # The configured settings as given (calibration would choose epochs / codebook size itself).
    return mixrec.fit(catalog, emb, event_rows(), cfg, calibrate="off", **SMALL)


# ------------------------------------------------------------------ data
def test_rows_become_items_with_string_ids(catalog):
    assert catalog.item_ids[:3] == ["0", "1", "2"]
    assert catalog.items[1].type == "video" and catalog.items[1].tags == ["hiking"]


@pytest.mark.parametrize("row, message", [
    ({"item_id": "a", "type": "product"}, r"items row 1 \('a'\): field 'title': Field required"),
    ({"item_id": "a", "type": "kitchen toaster", "title": "T"}, r"items row 1 \('a'\): field 'type': String should match"),
    ({"type": "product", "title": "T"}, r"items row 1: field 'item_id' is missing"),
    ({"item_id": 0, "type": "product", "title": "T"}, r"items row 1: duplicate item_id '0' \(first in row 0\)"),
    ({"item_id": 1.5, "type": "product", "title": "T"}, r"items row 1 field 'item_id': ids must be strings or integers"),
    ({"item_id": "a", "type": "product", "title": "T", "tags": "x"}, r"items row 1 field 'tags'"),
    ({"item_id": "a", "type": "product", "title": "T", "image": "no/such.png"}, r"items row 1 field 'image': no such file"),
    ({"item_id": "a", "type": "product", "title": "T", "audio": b""}, r"items row 1 field 'audio': empty bytes"),
])
def test_bad_item_rows_name_row_and_field(row, message):
    with pytest.raises(mixrec.DataError, match=message):
        mixrec.items([{"item_id": 0, "type": "product", "title": "ok"}, row])


@pytest.mark.parametrize("row, message", [
    ({"user_id": "u", "item_id": 99}, r"interactions row 1 field 'item_id': unknown item '99'"),
    ({"user_id": "u", "item_id": 0, "event": "teleport"}, r"interactions row 1 field 'event': 'teleport'"),
    ({"user_id": "u", "item_id": 0, "weight": "heavy"}, r"interactions row 1 field 'weight': expected a finite number"),
    ({"user_id": "u", "item_id": 0, "rating": 5}, r"interactions row 1: unknown field\(s\) \['rating'\]"),
    ({"item_id": 0}, r"interactions row 1: field 'user_id' is missing"),
])
def test_bad_interaction_rows_name_row_and_field(catalog, cfg, row, message):
    with pytest.raises(mixrec.DataError, match=message):
        mixrec.interactions([{"user_id": 7, "item_id": 0}, row], catalog, events=cfg.events)


def test_dataframes_are_accepted_like_lists_of_dicts(catalog):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(item_rows(6))
    frame.loc[2, "tags"] = None  # an empty cell is an absent field
    got = mixrec.items(frame)
    assert got.item_ids == [str(i) for i in range(6)] and got.items[2].tags == []
    events = pd.DataFrame({"user_id": [1, 2], "item_id": [0, 3],
                           "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True)})
    rows = mixrec.interactions(events, catalog)
    assert [(r.user_id, r.item_id) for r in rows] == [("1", "0"), ("2", "3")]
    assert rows[1].timestamp - rows[0].timestamp == 86_400


# ------------------------------------------------------------------ config
def test_overrides_are_validated_and_the_environment_is_ignored(monkeypatch):
    monkeypatch.setenv("MIXREC__MODEL__EPOCHS", "99")
    monkeypatch.setenv("MIXREC_CONFIG", str(REPO / "configs" / "no-such.yaml"))
    cfg = mixrec.resolve_config(None, no_components=12, codebook_size=5, fusion__seed=3)
    assert (cfg.model.no_components, cfg.fusion.codebook_size, cfg.fusion.seed) == (12, 5, 3)
    assert cfg.model.epochs == 20  # configs/offline.yaml's, not the environment's 99
    with pytest.raises(ConfigError, match=r"model.no_components"):
        mixrec.resolve_config(None, no_components=0)
    with pytest.raises(ConfigError, match=r"ambiguous.*fusion__seed or model__seed|ambiguous.*model__seed or fusion__seed"):
        mixrec.resolve_config(None, seed=1)
    with pytest.raises(ConfigError, match=r"unknown setting 'no_component'.*no_components"):
        mixrec.resolve_config(None, no_component=3)
    with pytest.raises(ConfigError, match=r"model.bogus"):
        mixrec.resolve_config(None, model__bogus=3)


# ------------------------------------------------------------------ encoding
def test_encode_caches_by_content_and_skips_loading_encoders_when_all_cached(tmp_path, catalog, cfg, emb, monkeypatch):
    first = mixrec.EncodeReport()
    got = mixrec.encode_items(catalog, cfg, cache_dir=tmp_path, progress=False, report=first)
    assert (first.cached, first.encoded) == (0, len(catalog))
    for m in got.vectors:
        np.testing.assert_allclose(got.vectors[m], emb.vectors[m], atol=1e-5)
    assert got.encoders["text"]["fingerprint"] == emb.encoders["text"]["fingerprint"]

    import encoders.encode_catalog as ec

    def no_encoders(*a, **k):
        raise AssertionError("encoders were loaded although every item is cached")

    monkeypatch.setattr(ec.CatalogEncoders, "from_config", no_encoders)
    again = mixrec.EncodeReport()
    back = mixrec.encode_items(catalog, cfg, cache_dir=tmp_path, progress=False, report=again)
    assert (again.cached, again.encoded) == (len(catalog), 0)
    for m in got.vectors:
        np.testing.assert_array_equal(back.vectors[m], got.vectors[m])
        np.testing.assert_array_equal(back.masks[m], got.masks[m])
    assert back.encoders == got.encoders
    monkeypatch.undo()

    rows = item_rows()
    rows[5]["title"] = "a changed title"
    changed = mixrec.EncodeReport()
    mixrec.encode_items(mixrec.items(rows), cfg, cache_dir=tmp_path, progress=False, report=changed)
    assert (changed.cached, changed.encoded) == (len(rows) - 1, 1)


def test_encode_batches_sorted_by_text_length(catalog, cfg):
    from encoders.encode_catalog import TEXT_BLOCK, CatalogEncoders

    enc = CatalogEncoders.from_config(cfg)
    seen: list[list[str]] = []
    real = enc.text.encode
    enc.text.encode = lambda batch: (seen.append(list(batch)), real(batch))[1]
    mixrec.encode_items(catalog, cfg, cache_dir=None, progress=False, encoders=enc)
    texts = {it.text() for it in catalog.items}
    seen = [b for b in seen if set(b) <= texts]  # not the fingerprint's probe texts
    lengths = [len(t) for batch in seen for t in batch]
    # sorted across the whole catalogue; the encoder gets blocks of TEXT_BLOCK batches (it pads per batch)
    block = cfg.encoders.text.batch_size * TEXT_BLOCK
    assert lengths == sorted(lengths) and len(seen) == -(-len(catalog) // block)


def test_media_as_bytes_or_path_give_the_same_vectors(tmp_path, cfg, media):
    png, wav = media.image_bytes((10, 200, 30)), media.audio_bytes(330.0)
    (tmp_path / "p.png").write_bytes(png)
    (tmp_path / "a.wav").write_bytes(wav)
    video = media.write_mp4(tmp_path / "v.mp4").read_bytes()
    as_bytes = mixrec.items([{"item_id": "p", "type": "product", "title": "P", "image": png},
                             {"item_id": "a", "type": "audio", "title": "A", "audio": wav},
                             {"item_id": "v", "type": "video", "title": "V", "video": video}])
    as_path = mixrec.items([{"item_id": "p", "type": "product", "title": "P", "image": "p.png"},
                            {"item_id": "a", "type": "audio", "title": "A", "audio": "a.wav"},
                            {"item_id": "v", "type": "video", "title": "V", "video": "v.mp4"}], base_dir=tmp_path)
    one = mixrec.encode_items(as_bytes, cfg, cache_dir=None, progress=False)
    two = mixrec.encode_items(as_path, cfg, cache_dir=None, progress=False)
    # the video fills its item's image (keyframes) and audio (soundtrack)
    assert one.masks["image"].tolist() == [True, False, True] and one.masks["audio"].tolist() == [False, True, True]
    for m in one.vectors:
        np.testing.assert_allclose(one.vectors[m], two.vectors[m], atol=1e-5)


def test_cache_key_follows_what_changes_vectors(tmp_path, cfg, catalog):
    from tools.api.embedding_cache import EmbeddingCache, encoder_key

    base = encoder_key(cfg)
    assert encoder_key(mixrec.resolve_config(cfg, encoders__text__batch_size=16)) == base  # batching: same vectors
    assert encoder_key(mixrec.resolve_config(cfg, encoders__image__seed=9)) != base
    assert encoder_key(mixrec.resolve_config(cfg, video__keyframes=3)) != base
    report = mixrec.EncodeReport()
    mixrec.encode_items(catalog, cfg, cache_dir=tmp_path, progress=False)
    cache = EmbeddingCache(tmp_path, base)
    entry = next(p for p in cache.dir.rglob("*.npz"))
    entry.write_bytes(b"not an npz")  # a damaged entry is a miss, then rewritten
    mixrec.encode_items(catalog, cfg, cache_dir=tmp_path, progress=False, report=report)
    assert (report.cached, report.encoded) == (len(catalog) - 1, 1)
    assert cache.get(entry.stem) is not None


# ------------------------------------------------------------------ fit, scores, top-k
def test_fit_applies_the_keyword_overrides(model):
    assert model.hybrid.model_cfg.no_components == 8 and model.hybrid.model_cfg.epochs == 5
    assert model.hybrid.codebook.size == 4


def test_fit_refuses_bad_rows_and_settings(catalog, emb, cfg):
    with pytest.raises(mixrec.DataError, match=r"interactions row 0 field 'item_id': unknown item 'nope'"):
        mixrec.fit(catalog, emb, [{"user_id": "u", "item_id": "nope"}], cfg, **SMALL)
    with pytest.raises(ConfigError, match=r"model.epochs"):
        mixrec.fit(catalog, emb, event_rows(), cfg, **{**SMALL, "epochs": -1})


def test_fit_calibrates_by_default_and_keeps_the_report(catalog, emb, cfg, tmp_path):
    model = mixrec.fit(catalog, emb, event_rows(), cfg, **SMALL)
    report = model.calibration
    assert report is not None and report["mode"].startswith("fast")
    if not report["mode"].startswith("fast (skipped"):  # enough users to hold a validation slice out
        assert report["chosen"] in {c["name"] for c in report["candidates"]}
    model.save(tmp_path / "art")
    assert mixrec.MixrecModel.load(tmp_path / "art").calibration == report  # as `mixrec info` reads it
    assert mixrec.fit(catalog, emb, event_rows(), cfg, calibrate="off", **SMALL).calibration["mode"] == "off"
    with pytest.raises(mixrec.DataError, match="calibrate must be one of off, fast, full, got 'fastest'"):
        mixrec.fit(catalog, emb, event_rows(), cfg, calibrate="fastest", **SMALL)
    with pytest.raises(mixrec.DataError, match="feature_weights fixes what calibration chooses"):
        mixrec.fit(catalog, emb, event_rows(), cfg, feature_weights=FeatureWeights(), **SMALL)


def test_top_k_for_many_users_is_keyed_by_id_and_matches_the_model(model):
    snap = model.hybrid.snapshot
    users = ["u1", "u2", "u3"]
    top = model.top_k(users, k=4)
    assert list(top) == users
    for u in users:
        assert top[u].source == "model"
        want = [r.item_id for r in model.hybrid.recommend(u, k=4)]  # the reader's own top-k
        assert [p.item_id for p in top[u].items] == want
        seen = {snap.item_ids[j] for j in snap.seen_rows(snap.user_index[u])}
        assert not seen & {p.item_id for p in top[u].items}
        for p in top[u].items:
            assert p.score == pytest.approx(float(model.hybrid.score_all(u)[snap.item_index[p.item_id]]), rel=1e-5)
    videos = model.top_k(["u1"], k=3, types=["video"])["u1"].items
    assert {p.type for p in videos} == {"video"}


def test_scores_are_keyed_by_item_id(model):
    table = model.scores(["u1", "u2"])
    by_id = table.for_user("u2")
    raw = model.hybrid.score_all("u2")
    index = model.hybrid.item_index()
    assert set(by_id) == set(model.item_ids)
    for iid in ("0", "7", "23"):
        assert by_id[iid] == pytest.approx(float(raw[index[iid]]), rel=1e-5)
        assert table.score("u2", iid) == by_id[iid]


def test_unseen_users_fall_back_as_documented(model):
    from fusion.query import Query
    from fusion.scoring import popularity_scores
    from mixrec.ranking import top_k

    snap = model.hybrid.snapshot
    top = model.top_k(["stranger", "fan", "u1"], k=5, liked={"fan": [1, 5], "u1": [2]})
    assert top["stranger"].source == "popularity"
    pop = popularity_scores(snap)
    assert [p.item_id for p in top["stranger"].items] == [snap.item_ids[j] for j in top_k(pop, 5)]  # the service's pick
    assert top["fan"].source == "liked_items"
    assert not {"1", "5"} & {p.item_id for p in top["fan"].items}
    want = model.hybrid.score_all(Query(liked_item_ids=("1", "5")))
    for p in top["fan"].items:
        assert p.score == pytest.approx(float(want[snap.item_index[p.item_id]]), rel=1e-5)
    assert top["u1"].source == "model+liked"
    with pytest.raises(UnknownUserError, match="stranger"):
        model.top_k(["stranger"], fallback="error")
    with pytest.raises(mixrec.DataError, match=r"liked items of user 'fan': unknown item\(s\) 'zzz'"):
        model.top_k(["fan"], liked={"fan": ["zzz"]})


# ------------------------------------------------------------------ evaluation
def test_evaluate_runs_the_protocols_and_writes_the_report(tmp_path, catalog, emb, cfg):
    events = event_rows()
    test = events[::5]
    train = [e for e in events if e not in test]
    report = mixrec.evaluate(catalog, emb, train, cfg, test=test, out=tmp_path, progress=False, known=2,
                             models=("popularity", "lightfm", "mixrec"), **SMALL)
    assert set(report.results) == {"warm", "cold_items", "cold_items_all", "cold_users"}
    for protocol in report.results.values():
        assert set(protocol) == {"popularity", "lightfm", "mixrec"}
        assert all("error" not in m for m in protocol.values())
    # warm scored exactly the users of the given hold-out
    assert report.results["warm"]["mixrec"]["users"] == len({e["user_id"] for e in test})
    assert {p.suffix for p in report.files.values()} >= {".json", ".md", ".png"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in report.files.values())


# ------------------------------------------------------------------ model store
def test_model_store_round_trip_through_the_service_loader(bentoml_home, model):
    tag = model.save_to_model_store()
    assert re.fullmatch(r"mixrec-hybrid:\w+", tag)
    back = mixrec.MixrecModel.load(f"bentoml:{tag}")
    assert back.calibration == model.calibration is not None  # calibration.json travels in the entry
    users = ["u1", "u2", "stranger"]
    a, b = model.top_k(users, k=5), back.top_k(users, k=5)
    for u in users:
        assert [p.item_id for p in a[u].items] == [p.item_id for p in b[u].items]
        assert [p.score for p in a[u].items] == pytest.approx([p.score for p in b[u].items], rel=1e-6)


# ------------------------------------------------------------------ the README's worked example
def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tmp_path, monkeypatch, bentoml_home):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(readme_example(), "README.md#python-api", "exec"), ns)  # noqa: S102 - our own README
    assert set(ns["top"]) == {"u1", "u2", "newcomer"} and ns["top"]["newcomer"].source == "popularity"
    assert ns["fan"].source == "liked_items" and len(ns["fan"].items) == 5
    assert len(ns["podcasts"].items) == 3 and {p.type for p in ns["podcasts"].items} == {"podcast"}
    assert set(ns["scores"]) == {str(i) for i in range(48)}
    assert ns["report"].files["png"].is_file()
    assert [p.item_id for p in ns["same"].top_k(["u1"], k=5)["u1"].items] == [p.item_id for p in ns["top"]["u1"].items]
    second = mixrec.EncodeReport()
    mixrec.encode_items(ns["catalog"], cache_dir="mixrec-cache", progress=False, report=second)
    assert (second.cached, second.encoded) == (48, 0)


# ------------------------------------------------------------------ the same Bento serves it (e2e)
@pytest.mark.e2e
def test_the_built_bento_serves_a_model_trained_through_the_api(tiny_demo, tmp_path, monkeypatch):
    """The tiny demo's Bento (built by ``mixrec demo``) serves a model the API trained on that catalogue
    read into memory, from ``serving.artifacts: bentoml:<tag>``; its answers are the API's top-k."""
    import csv
    import json

    import httpx
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    from server_harness import serve_bento

    data = tiny_demo.data_dir
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines() if line.strip()]
    with open(data / "interactions.csv", newline="") as f:
        events = [{**r, "weight": float(r["weight"]), "timestamp": float(r["timestamp"])} for r in csv.DictReader(f)]
    catalog = mixrec.items(rows, base_dir=data)  # media paths relative to the catalogue, as in items.jsonl
    emb = mixrec.encode_items(catalog, cache_dir=tmp_path / "cache", progress=False)  # the Bento's encoders
    model = mixrec.fit(catalog, emb, events, epochs=3, no_components=12)  # not the demo's own model (48)
    home = tiny_demo.bentoml_home
    monkeypatch.setenv("BENTOML_HOME", str(home))
    with BentoMLContainer.bentoml_home.patch(str(home)), \
            BentoMLContainer.model_store_dir.patch(str(home / "models")), \
            BentoMLContainer.model_store.patch(ModelStore(str(home / "models"))):
        tag = model.save_to_model_store()
    users = model.users[:3]
    want = model.top_k(users, k=5)
    env = {**tiny_demo.env(), "MIXREC__SERVING__ARTIFACTS": f"bentoml:{tag}",
           "MIXREC__SERVING__STATE_DIR": str(tmp_path / "state"),
           "MIXREC__STORAGE__URL": f"sqlite:///{tmp_path / 'mixrec.db'}",
           "MIXREC__STORAGE__MEDIA_DIR": str(tmp_path / "media")}
    with serve_bento(tiny_demo.bento_tag, env=env, log_dir=tmp_path / "logs", cwd=data, grace_s=5.0) as server:
        for u in users:
            r = httpx.post(f"{server.url}/recommend", json={"user_id": u, "k": 5, "mix": "score", "explain": False},
                           timeout=60)
            assert r.status_code == 200, r.text
            assert [i["item_id"] for i in r.json()["items"]] == [p.item_id for p in want[u].items]


# ------------------------------------------------------------------ the catalogue's own type labels
def test_item_types_are_the_users_own_labels(tmp_path, cfg):
    """A books / podcasts / articles catalogue fits, filters by its own labels, names them when a
    request uses another, and keeps them through save and load (the labels were a fixed
    product / video / audio list: "book" was refused as a row error)."""
    labels = ("book", "podcast", "long-read")
    rows = [dict(r, type=labels[int(r["item_id"]) % 3]) for r in item_rows()]
    catalog = mixrec.items(rows)
    assert {it.type for it in catalog.items} == set(labels)
    emb = mixrec.encode_items(catalog, cfg, cache_dir=None, progress=False)
    model = mixrec.fit(catalog, emb, event_rows(), cfg, calibrate="off", **SMALL)
    assert set(model.hybrid.snapshot.type_names) == set(labels)
    podcasts = model.top_k(["u1", "stranger"], k=4, types=["podcast"])
    assert all(p.type == "podcast" for u in podcasts.values() for p in u.items) and podcasts["u1"].items
    with pytest.raises(InputError, match=r"unknown item type.*'video'.*'book'"):
        model.top_k(["u1"], types=["video"])
    model.save(tmp_path / "books")
    back = mixrec.MixrecModel.load(tmp_path / "books")
    assert back.hybrid.snapshot.type_names == model.hybrid.snapshot.type_names
    reads = [m.top_k(["u2"], k=5, types=["long-read"])["u2"].items for m in (model, back)]
    assert [p.item_id for p in reads[0]] == [p.item_id for p in reads[1]] and {p.type for p in reads[0]} == {"long-read"}
    with pytest.raises(mixrec.DataError, match="type"):
        mixrec.items([{"item_id": 1, "type": "has space", "title": "x"}])


def test_deleted_items_are_in_no_table_nor_top_k(catalog, emb, cfg):
    """Items deleted from the model (tombstoned until compaction) leave ``item_ids``, ``scores`` and ``top_k``."""
    events = [e for e in event_rows() if e["item_id"] not in (22, 23)]
    model = mixrec.fit(catalog, emb, events, cfg, calibrate="off", **SMALL)
    unliked = ["22", "23"]
    model.hybrid.remove_items(unliked)
    assert model.hybrid.snapshot.alive is not None  # tombstoned, not compacted
    assert not set(unliked) & set(model.item_ids) and len(model.item_ids) == len(catalog.items) - len(unliked)
    table = model.scores(["u1", "stranger"])
    assert table.item_ids == model.item_ids and table.values.shape == (2, len(model.item_ids))
    assert not set(unliked) & {p.item_id for u in model.top_k(["u1", "stranger"], k=30).values() for p in u.items}
