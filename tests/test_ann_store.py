"""Persisted ANN indexes (mixrec/ann_store.py) and how the service uses them (services/candidates.py):
round trip, every mismatch detected and rebuilt, readiness before / after the load, ``mixrec train``'s hook."""

from __future__ import annotations

import json
import logging
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from mixrec.ann_store import AnnStore
from services import candidates as cand_mod
from services import operate
from services.candidates import STORE_DIR, AnnCandidates

N, DIM = 3000, 15
TYPES = ("product", "video", "audio")


def fake_snapshot(seed: int = 0, n: int = N, **changes) -> SimpleNamespace:
    """What AnnCandidates reads of a Snapshot: ids, types, LightFM item vectors and biases."""
    rng = np.random.default_rng(seed)
    ids = tuple(f"i{i}" for i in range(n))
    snap = SimpleNamespace(item_ids=ids, item_types=tuple(TYPES[i % 3] for i in range(n)), type_names=TYPES,
                           item_repr=rng.normal(size=(n, DIM)).astype(np.float32),
                           item_bias=rng.normal(size=n).astype(np.float32))
    for k, v in changes.items():
        setattr(snap, k, v)
    snap.item_index = {i: r for r, i in enumerate(snap.item_ids)}
    return snap


def answers(ann: AnnCandidates, snap, queries) -> list[list[int]]:
    view = ann.view(snap)
    out = []
    for q in queries:
        for ix in view.built.indexes:
            out.append(ix.search(np.append(q, 1.0), 20)[0].tolist())
    return out


@pytest.fixture
def queries():
    return np.random.default_rng(9).normal(size=(10, DIM)).astype(np.float32)


def test_round_trip_loads_instead_of_building_and_answers_the_same(tmp_path, queries):
    snap = fake_snapshot()
    first = AnnCandidates(1000, tmp_path / "ann")
    first.refresh(snap, wait=True)
    assert first.describe()["builds"] == 1 and (tmp_path / "ann" / "manifest.json").exists()
    manifest = json.loads((tmp_path / "ann" / "manifest.json").read_text())
    assert manifest["items"] == N and len(manifest["indexes"]) == 3 and manifest["dim"] == DIM + 1

    second = AnnCandidates(1000, tmp_path / "ann")
    second.refresh(snap, wait=True)
    d = second.describe()
    assert d["builds"] == 0 and d["loads"] == 1 and d["source"] == str(tmp_path / "ann")
    assert d["last_load_seconds"] is not None and d["last_build_seconds"] is None
    assert answers(second, snap, queries) == answers(first, snap, queries)
    assert all(ix.uses_ann for ix in second.view(snap).built.indexes)


@pytest.mark.parametrize("change", ["vector", "bias", "id", "type", "count"])
def test_any_change_to_what_was_indexed_is_detected_and_rebuilt(tmp_path, queries, caplog, change):
    snap = fake_snapshot()
    AnnCandidates(1000, tmp_path / "ann").refresh(snap, wait=True)
    if change == "vector":
        repr_ = snap.item_repr.copy()
        repr_[1234, 3] += 0.25
        other = fake_snapshot(item_repr=repr_)
    elif change == "bias":
        bias = snap.item_bias.copy()
        bias[7] -= 0.5
        other = fake_snapshot(item_bias=bias)
    elif change == "id":
        other = fake_snapshot(item_ids=snap.item_ids[:10] + ("renamed",) + snap.item_ids[11:])
    elif change == "type":
        types = list(snap.item_types)
        types[0] = "audio" if types[0] != "audio" else "video"
        other = fake_snapshot(item_types=tuple(types))
    else:
        other = fake_snapshot(n=N - 1, item_repr=snap.item_repr[:-1], item_bias=snap.item_bias[:-1])
    ann = AnnCandidates(1000, tmp_path / "ann")
    with caplog.at_level(logging.WARNING, logger="mixrec.ann_store"):
        ann.refresh(other, wait=True)
    assert ann.describe()["builds"] == 1 and ann.describe()["loads"] == 0
    assert "not using the ANN indexes" in caplog.text
    # The rebuilt set is the one persisted now: the next start loads it.
    again = AnnCandidates(1000, tmp_path / "ann")
    again.refresh(other, wait=True)
    assert again.describe()["loads"] == 1
    assert answers(again, other, queries) == answers(ann, other, queries)


def test_float_rounding_is_not_a_change(tmp_path):
    """BLAS may round a recomputed vector differently (thread count); candidates are re-scored exactly."""
    snap = fake_snapshot()
    AnnCandidates(1000, tmp_path / "ann").refresh(snap, wait=True)
    nudged = fake_snapshot(item_repr=np.nextafter(snap.item_repr, np.float32(np.inf)))
    ann = AnnCandidates(1000, tmp_path / "ann")
    ann.refresh(nudged, wait=True)
    assert ann.describe()["loads"] == 1


def test_the_vector_check_reads_block_by_block_and_misses_no_block(tmp_path, monkeypatch, caplog):
    """The check compares a few rows at a time (a replica's peak memory at 1M items); a change in
    any block, the last one included, still refuses the stored set."""
    from mixrec import ann_store

    monkeypatch.setattr(ann_store, "CHECK_BLOCK", 100)
    snap = fake_snapshot()
    AnnCandidates(1000, tmp_path / "ann").refresh(snap, wait=True)
    index = AnnCandidates(1000, tmp_path / "ann")
    index.refresh(snap, wait=True)
    assert index.describe()["loads"] == 1  # unchanged: every block matches
    ix = index.view(snap).built.indexes[0]
    blocks = [ix.vectors_at(a, a + 100) for a in range(0, len(ix), 100)]
    assert np.array_equal(np.concatenate(blocks), ix.vectors())
    last_row = int(ix.ids()[-1])  # the last position of the first type's index: its last block
    repr_ = snap.item_repr.copy()
    repr_[last_row, 0] += 0.25
    changed = AnnCandidates(1000, tmp_path / "ann")
    with caplog.at_level(logging.WARNING, logger="mixrec.ann_store"):
        changed.refresh(fake_snapshot(item_repr=repr_), wait=True)
    assert changed.describe()["loads"] == 0 and "stored vectors differ" in caplog.text


def test_a_torn_index_file_is_rebuilt_not_fatal(tmp_path, caplog):
    snap = fake_snapshot()
    AnnCandidates(1000, tmp_path / "ann").refresh(snap, wait=True)
    manifest = json.loads((tmp_path / "ann" / "manifest.json").read_text())
    (tmp_path / "ann" / manifest["indexes"][1]["file"]).write_bytes(b"not a faiss index")
    ann = AnnCandidates(1000, tmp_path / "ann")
    with caplog.at_level(logging.WARNING, logger="mixrec.ann_store"):
        ann.refresh(snap, wait=True)
    assert ann.describe()["builds"] == 1 and "unreadable" in caplog.text
    assert ann.ready(snap)


def test_save_replaces_the_set_and_leaves_no_orphans(tmp_path):
    for seed in (0, 1):
        AnnCandidates(1000, tmp_path / "ann").refresh(fake_snapshot(seed), wait=True)
    manifest = AnnStore(tmp_path / "ann").manifest()
    named = {e[k] for e in manifest["indexes"] for k in ("file", "ids")}
    on_disk = {p.name for p in (tmp_path / "ann").iterdir()} - {"manifest.json", ".lock"}
    assert on_disk == named


def test_readiness_waits_for_the_indexes(tmp_path, monkeypatch):
    snap = fake_snapshot()
    release = threading.Event()
    real_build = cand_mod.build_indexes

    def slow_build(*a, **kw):
        release.wait(30)
        return real_build(*a, **kw)

    monkeypatch.setattr(cand_mod, "build_indexes", slow_build)
    engine = SimpleNamespace(ann=AnnCandidates(1000, tmp_path / "ann"),
                             replica=SimpleNamespace(model=SimpleNamespace(snapshot=snap)))
    assert not operate.ready(engine)  # asking starts the build: never stuck waiting for a first request
    assert not operate.ready(engine)
    release.set()
    engine.ann._thread.join(30)
    assert operate.ready(engine)
    # A restarted replica: not ready until the persisted indexes are loaded, then ready without a build.
    restarted = SimpleNamespace(ann=AnnCandidates(1000, tmp_path / "ann"), replica=engine.replica)
    monkeypatch.setattr(cand_mod, "build_indexes", lambda *a, **kw: pytest.fail("built instead of loaded"))
    restarted.ann.refresh(snap, wait=True)
    assert operate.ready(restarted) and restarted.ann.describe()["loads"] == 1
    # Below the threshold there is nothing to wait for.
    small = SimpleNamespace(ann=AnnCandidates(10 * N, tmp_path / "other"), replica=engine.replica)
    assert operate.ready(small)


def test_a_failing_build_serves_exactly_rather_than_never_being_ready(tmp_path, monkeypatch):
    snap = fake_snapshot()

    def broken(*a, **kw):
        raise MemoryError("no room for the graph")

    monkeypatch.setattr(cand_mod, "build_indexes", broken)
    ann = AnnCandidates(1000, tmp_path / "ann")
    ann.refresh(snap, wait=True)
    assert ann.ready(snap) and ann.view(snap) is None  # exact candidates (services/pipeline.py)


# ---------------------------------------------------------------------- mixrec train's hook, the engine's stores
@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    from fusion.synthetic import make_catalog
    from mixrec.catalog import write_interactions, write_items

    root = tmp_path_factory.mktemp("ann-catalog")
    cat = make_catalog(n_items=N, n_users=80, per_user=10, seed=5)
    write_items(root, cat.items)
    write_interactions(root, cat.interactions)
    cat.embeddings.save(root / "embeddings.npz")
    return root, cat


def test_train_writes_the_indexes_and_the_service_loads_them(catalog_dir, tmp_path, monkeypatch):
    from fusion.hybrid import HybridModel
    from mixrec.config import REPO_ROOT, load_config
    from mixrec.storage.media import MediaStore
    from mixrec.storage.store import CatalogStore
    from services.engine import RecommenderEngine
    from tools.cli import app

    root, cat = catalog_dir
    # The synthetic embeddings name no real encoder: let the CLI's encoder check see them as configured.
    monkeypatch.setattr("encoders.registry.configured_fingerprints", lambda cfg, slots: cat.embeddings.encoders)
    env = {"MIXREC__SERVING__ANN_THRESHOLD": "1000", "MIXREC__MODEL__EPOCHS": "2", "MIXREC__MODEL__NO_COMPONENTS": "8",
           "MIXREC__FUSION__SHARED_DIM": "16", "MIXREC__FUSION__CODEBOOK_SIZE": "8",
           "MIXREC__SERVING__STATE_DIR": str(tmp_path / "state"), "MIXREC__SERVING__ARTIFACTS": str(tmp_path / "art"),
           "MIXREC__STORAGE__URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "MIXREC__STORAGE__MEDIA_DIR": str(tmp_path / "media"), "MIXREC__SERVING__UPDATE_EVERY": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["train", "--catalog-dir", str(root), "--embeddings", str(root / "embeddings.npz"),
                                      "--out", str(tmp_path / "art"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ANN indexes" in result.output and (tmp_path / "art" / STORE_DIR / "manifest.json").exists()

    cfg = load_config(REPO_ROOT / "configs/offline.yaml", environ=env)
    model = HybridModel.load(tmp_path / "art")
    model.save(tmp_path / "art")  # a model saved again into its directory keeps the indexes beside it
    model = HybridModel.load(tmp_path / "art")
    engine = RecommenderEngine(cfg, model, CatalogStore(cfg.storage.url), MediaStore(cfg.storage.media_dir))
    try:
        engine.ann.refresh(model.snapshot, wait=True)
        d = engine.ann.describe()
        assert d["loads"] == 1 and d["builds"] == 0 and d["source"] == str(tmp_path / "art" / STORE_DIR)
        assert operate.ready(engine)
    finally:
        engine.store.close()

    # Below the threshold, train writes nothing and says why.
    monkeypatch.setenv("MIXREC__SERVING__ANN_THRESHOLD", str(10 * N))
    result = CliRunner().invoke(app, ["train", "--catalog-dir", str(root), "--embeddings", str(root / "embeddings.npz"),
                                      "--out", str(tmp_path / "small"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "exact below" in result.output and not (tmp_path / "small" / STORE_DIR).exists()
