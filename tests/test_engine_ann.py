"""The Recommender engine's ANN path (services.candidates) against its exact path.

A few thousand synthetic items with ``serving.ann_threshold`` lowered below the catalog
size, so known-user recommendations go through the per-type HNSW indexes.
"""

from __future__ import annotations

import numpy as np
import pytest

from fusion.hybrid import HybridModel
from fusion.synthetic import make_catalog
from mixrec.catalog import Item
from mixrec.config import REPO_ROOT, load_config
from mixrec.storage.media import MediaStore
from mixrec.storage.store import CatalogStore
from services.engine import Options, RecommenderEngine

N_ITEMS = 3000


def _cfg(tmp_path, ann_threshold: int):
    env = {"MIXREC__SERVING__STATE_DIR": str(tmp_path / "state"),
           "MIXREC__STORAGE__URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "MIXREC__STORAGE__MEDIA_DIR": str(tmp_path / "media"),
           "MIXREC__SERVING__UPDATE_EVERY": "0", "MIXREC__SERVING__ANN_THRESHOLD": str(ann_threshold),
           "MIXREC__FUSION__SHARED_DIM": "16", "MIXREC__FUSION__CODEBOOK_SIZE": "16",
           "MIXREC__MODEL__NO_COMPONENTS": "16", "MIXREC__MODEL__EPOCHS": "5"}
    return load_config(REPO_ROOT / "configs/offline.yaml", environ=env)


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(n_items=N_ITEMS, n_users=120, per_user=15, seed=3)


@pytest.fixture(scope="module")
def model(catalog, tmp_path_factory):
    cfg = _cfg(tmp_path_factory.mktemp("cfg"), 1000)
    return HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, cfg)


def _engine(model, tmp_path, ann_threshold: int) -> RecommenderEngine:
    cfg = _cfg(tmp_path, ann_threshold)
    eng = RecommenderEngine(cfg, model, CatalogStore(cfg.storage.url), MediaStore(cfg.storage.media_dir))
    eng.bootstrap_catalog()
    eng.sync()
    return eng


@pytest.fixture
def engines(model, tmp_path):
    ann = _engine(model, tmp_path / "ann", 1000)
    ann.ann.refresh(model.snapshot, wait=True)
    exact = _engine(model, tmp_path / "exact", 10 * N_ITEMS)
    yield ann, exact
    ann.store.close()
    exact.store.close()


def _ids(out):
    return [r["item_id"] for r in out["items"]]


def test_ann_path_matches_exact_top_k(engines, catalog):
    ann, exact = engines
    assert ann.ann.view(ann.model.snapshot) is not None and exact.ann.view(exact.model.snapshot) is None
    users = sorted(catalog.user_tastes)[:8]
    for user in users:
        for opts in (Options(k=10, explain=False), Options(k=10, mix="interleave", explain=False)):
            a, e = ann.recommend(user, opts), exact.recommend(user, opts)
            assert _ids(a) == _ids(e), (user, opts.mix)
            assert [r["score"] for r in a["items"]] == [r["score"] for r in e["items"]]


def test_ann_path_honours_filters_mix_and_seen(engines, catalog):
    ann, _ = engines
    user = sorted(catalog.user_tastes)[0]
    seen = {i.item_id for i in catalog.interactions if i.user_id == user}
    by_id = {it.item_id: it for it in catalog.items}
    out = ann.recommend(user, Options(k=10, mix={"product": 5, "video": 3, "audio": 2}))
    got = _ids(out)
    assert len(got) == 10 and not seen & set(got)
    assert sorted(by_id[i].type for i in got) == sorted(["product"] * 5 + ["video"] * 3 + ["audio"] * 2)
    assert all("explanation" in r for r in out["items"])
    tag = catalog.items[0].tags[1]  # e.g. "jazz-0": about 1/18 of the catalog
    got = _ids(ann.recommend(user, Options(k=10, types=["video"], tags=[tag], explain=False)))
    assert got and all(by_id[i].type == "video" and tag in by_id[i].tags for i in got)
    inter = _ids(ann.recommend(user, Options(k=9, mix="interleave", explain=False)))
    assert {by_id[i].type for i in inter} == {"product", "video", "audio"}
    banned = got[:3]
    again = _ids(ann.recommend(user, Options(k=10, types=["video"], tags=[tag], exclude_item_ids=banned,
                                             explain=False)))
    assert not set(banned) & set(again)


def test_added_item_is_recommended_before_and_after_the_index_rebuild(engines, catalog):
    ann, _ = engines
    user = sorted(catalog.user_tastes)[1]
    built_before = ann.ann.describe()["builds"]
    vec = catalog.embeddings.vectors["text"][0]
    new = Item(item_id="fresh-ann-1", type="audio", title="fresh", tags=["only-here"])
    ann.add_items([new], {"fresh-ann-1": {"text": vec}})
    opts = Options(k=5, tags=["only-here"], explain=False)
    assert _ids(ann.recommend(user, opts)) == ["fresh-ann-1"]  # served from the old index + exact merge
    ann.ann.refresh(ann.model.snapshot, wait=True)
    assert ann.ann.describe()["builds"] == built_before + 1
    assert _ids(ann.recommend(user, opts)) == ["fresh-ann-1"]


def test_an_item_of_a_type_new_to_the_model_is_served_before_and_after_the_index_rebuild(engines, catalog):
    """Type labels are the catalogue's own: an added item may bring one the model never saw. The
    ANN indexes built before have no index for it (its rows are scored exactly until the rebuild),
    the types filter and the mix accept it at once, and other labels are refused by name."""
    from mixrec.errors import InputError

    user = sorted(catalog.user_tastes)[3]
    vec = catalog.embeddings.vectors["text"][1]
    for eng in engines:
        eng.add_items([Item(item_id="pod-1", type="podcast", title="a new kind of item")], {"pod-1": {"text": vec}})
        assert "podcast" in eng.info()["model"]["item_types"]
        assert _ids(eng.recommend(user, Options(k=3, types=["podcast"], explain=False))) == ["pod-1"]
        mixed = eng.recommend(user, Options(k=4, mix={"podcast": 1, "video": 3}, explain=False))["items"]
        assert sorted(r["type"] for r in mixed) == ["podcast", "video", "video", "video"]
        with pytest.raises(InputError, match=r"unknown item type.*'gadget'.*'podcast'"):
            eng.recommend(user, Options(k=3, types=["gadget"]))
    ann = engines[0]
    ann.ann.refresh(ann.model.snapshot, wait=True)
    assert len(ann.ann._built.indexes) == len(ann.model.snapshot.type_names)  # one index per label now
    assert _ids(ann.recommend(user, Options(k=3, types=["podcast"], explain=False))) == ["pod-1"]


def test_removed_item_never_comes_back_from_a_stale_index(engines, catalog):
    ann, _ = engines
    user = sorted(catalog.user_tastes)[2]
    top = _ids(ann.recommend(user, Options(k=3, explain=False)))
    ann.delete_items([top[0]])
    got = _ids(ann.recommend(user, Options(k=3, explain=False)))  # index still holds the old rows
    assert top[0] not in got and got[:2] == top[1:]
    assert np.isfinite([r["score"] for r in ann.recommend(user, Options(k=3, explain=False))["items"]]).all()


def test_deleting_items_nobody_liked_is_a_tombstone_and_no_read_path_returns_them(engines, catalog):
    """The service's delete of unliked items: the model marks rows dead instead of rebuilding the
    catalogue, the Recommender keeps its per-snapshot metadata (same rows), and neither the ANN nor
    the exact path, popularity, a query or similar items return them; /info counts live items.
    (The two engines share one model: the second sees the first one's tombstones too.)"""
    liked = {e.item_id for e in catalog.interactions}
    user = sorted(catalog.user_tastes)[4]
    for eng in engines:
        snap = eng.model.snapshot
        live = eng.info()["model"]["items"]
        gone = [i for i in _ids(eng.recommend(user, Options(k=40, explain=False))) if i not in liked][:3]
        assert len(gone) == 3
        meta = eng.pipeline.meta(snap)
        out = eng.delete_items(gone)
        after = eng.model.snapshot
        assert sorted(out["deleted"]) == sorted(gone)
        assert after.alive is not None and after.item_ids == snap.item_ids  # same rows, some dead
        assert eng.pipeline.meta(after) is meta  # no metadata rebuild for a delete
        assert out["catalog_size"] == eng.info()["model"]["items"] == live - 3
        kept = next(i for i in _ids(eng.recommend(user, Options(k=5, explain=False))))
        reads = [eng.recommend(user, Options(k=40, explain=False)),
                 eng.recommend(user, Options(k=40, mix="interleave", explain=False)),
                 eng.recommend("nobody-at-all", Options(k=40, explain=False), cold=True),
                 eng.recommend_by_query({"text": catalog.embeddings.vectors["text"][eng.model.snapshot.item_index[kept]]},
                                        [], Options(k=40, explain=False)),
                 eng.similar_items(kept, k=40)]
        for r in reads:
            assert not set(gone) & {i["item_id"] for i in r["items"]}


def _sample(text: str, name: str) -> float:
    found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.split("{")[0].split(" ")[0] == name]
    assert found, f"{name} not exported"
    return found[0]


def test_ann_counters_recall_and_fallback_rate_reach_the_metrics(engines, catalog, monkeypatch):
    from prometheus_client import REGISTRY, generate_latest

    from services import candidates, ops_metrics

    ann, _ = engines
    monkeypatch.setattr(candidates, "EXACT_BELOW", 100)  # ~1000 items per type: walk the graphs, not scan
    ann.ann = ann.pipeline.ann = candidates.AnnCandidates(1000)
    ann.ann.refresh(ann.model.snapshot, wait=True)
    ann.ann.recall.every = 1  # measure every search (a service samples one in 50)
    for user in sorted(catalog.user_tastes)[:12]:
        ann.recommend(user, Options(k=10, mix="interleave", explain=False))
    ann.ann.recall.drain()
    d = ann.ann.describe()
    # faiss builds HNSW on several threads (graphs differ run to run): fallbacks are rare, not impossible
    assert d["searches"] >= 36 and d["recall_samples"] >= 36 and d["exact_fallbacks"] <= d["searches"] // 10
    vec = catalog.embeddings.vectors["text"][2]
    ann.add_items([Item(item_id="pod-metrics", type="podcast", title="a label of this catalogue's own")],
                  {"pod-metrics": {"text": vec}})
    ops_metrics.bind(ann)
    ops_metrics.refresh()
    text = generate_latest(REGISTRY).decode()
    pods = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith('mixrec_catalog_items{type="podcast"}')]
    assert pods == [ann.store.stats()["items_by_type"]["podcast"]] and pods[0] >= 1  # a label's series, by label
    assert _sample(text, "mixrec_ann_searches") == d["searches"]
    assert _sample(text, "mixrec_ann_widenings") == d["widenings"]
    assert _sample(text, "mixrec_ann_reentries") == d["reentries"]
    assert _sample(text, "mixrec_ann_exact_fallbacks") == d["exact_fallbacks"]
    assert _sample(text, "mixrec_ann_exact_fallback_ratio") == pytest.approx(d["exact_fallbacks"] / d["searches"])
    assert _sample(text, "mixrec_ann_recall_samples") == d["recall_samples"]
    assert 0.9 <= _sample(text, "mixrec_ann_recall") <= 1.0
    assert _sample(text, "mixrec_ann_index_bytes") == d["bytes"] > 0
