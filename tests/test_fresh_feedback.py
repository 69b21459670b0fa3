"""Fresh feedback counts at once (issue 14): request-time fold-in of the events the model has not trained on.

An in-process ``RecommenderEngine`` over a small synthetic catalogue (fusion/synthetic.py: six
categories, users who like one or two of them) trained here in a few seconds, so a category has
enough items for "three likes in one category -> that category first" to be checkable.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from fusion.hybrid import HybridModel
from fusion.scoring import FreshEvent, recency_decay
from fusion.synthetic import make_catalog
from mixrec.catalog import Interaction
from mixrec.config import REPO_ROOT, load_config
from mixrec.errors import NotFoundError
from server_harness import engine_config
from services.engine import Options, RecommenderEngine


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    cat = make_catalog(n_items=240, n_users=150, seed=3)
    base = load_config(REPO_ROOT / "configs/offline.yaml", environ={})
    cfg = base.model_copy(update={
        "fusion": base.fusion.model_copy(update={"shared_dim": 16, "codebook_size": 12}),
        "model": base.model.model_copy(update={"no_components": 16, "epochs": 15, "num_threads": 1})})
    model = HybridModel.train(cat.items, cat.embeddings, cat.interactions, cfg)
    out = tmp_path_factory.mktemp("fresh-artifacts")
    model.save(out)
    return cat, out


@pytest.fixture
def engine(synthetic, tmp_path):
    _, artifacts = synthetic
    eng = RecommenderEngine.open(engine_config(artifacts, tmp_path, update_every=0), start_background=False)
    yield eng
    eng.close()


def _category(cat, item_id: str) -> str:
    return next(it.category for it in cat.items if it.item_id == item_id)


def test_three_likes_in_one_category_come_first_without_an_update(engine, synthetic):
    cat, _ = synthetic
    jazz = [it.item_id for it in cat.items if it.category == "jazz" and it.type == "audio"][:3]
    now = time.time()
    engine.feedback([Interaction("fresh-user", i, "like", 1.0, now - 60 + n) for n, i in enumerate(jazz)])
    out = engine.recommend("fresh-user", Options(k=5))
    got = [r["item_id"] for r in out["items"]]
    assert out["fresh_events"] == 3 and engine.updates_done == 0
    assert [_category(cat, i) for i in got[:3]] == ["jazz"] * 3, [(i, _category(cat, i)) for i in got]
    assert not set(jazz) & set(got), "liked items are seen: excluded at once"
    top = out["items"][0]["explanation"]
    assert top["because"].startswith("because you liked '") and top["because"].endswith("a minute ago"), top
    assert any(e.get("fresh") and e["item_id"] in jazz for e in top["because_you_liked"]), top
    assert top["components"]["fresh_events"] != 0


def test_a_dislike_removes_the_item_and_pushes_its_neighbours_down(engine, synthetic):
    cat, _ = synthetic
    user = cat.interactions[0].user_id
    n = 200  # serving.max_k: nearly the whole catalogue of 240
    before = engine.recommend(user, Options(k=n, explain=False), exclude_seen=False)["items"]
    target = before[0]["item_id"]
    # its close neighbours: nearest by LightFM representation, the space the user vector lives in
    near = [r.item_id for r in engine.model.similar_items(target, k=3, space="lightfm")]
    engine.feedback([Interaction(user, target, "dislike", 1.0, time.time())])
    after = engine.recommend(user, Options(k=n, explain=False), exclude_seen=False)["items"]
    assert target not in {r["item_id"] for r in after}
    rank_before = {r["item_id"]: p for p, r in enumerate(before)}
    rank_after = {r["item_id"]: p for p, r in enumerate(after)}
    drops = [rank_after.get(i, n) - rank_before[i] for i in near]
    assert all(d > 0 for d in drops) and np.mean(drops) >= 5, (near, drops)


def test_user_with_no_events_is_404_or_popular_when_asked(engine):
    with pytest.raises(NotFoundError, match="recommend_by_query"):
        engine.recommend("nobody-at-all", Options(k=3))
    out = engine.recommend("nobody-at-all", Options(k=3), cold=True)
    assert out["cold"] is True and len(out["items"]) == 3
    counts = engine.model.snapshot.counts
    index = engine.model.item_index()
    got = [counts[index[r["item_id"]]] for r in out["items"]]
    assert got == sorted(got, reverse=True) and got[0] == counts.max()


def test_fresh_events_stop_being_fresh_once_trained(engine, synthetic, tmp_path):
    cat, _ = synthetic
    ids = [it.item_id for it in cat.items if it.category == "travel"][:2]
    engine.feedback([Interaction("moving-user", i, "like", 1.0, time.time()) for i in ids])
    assert engine.recommend("moving-user", Options(k=3, explain=False))["fresh_events"] == 2
    engine.update_model(wait=True, epochs=1)
    assert engine.trained_mark == engine.event_mark > 0
    assert engine.recommend("moving-user", Options(k=3, explain=False))["fresh_events"] == 0
    engine.checkpoint()
    again = RecommenderEngine.open(engine.cfg, start_background=False)  # the watermark survives a restart
    try:
        assert again.trained_mark == engine.trained_mark
        assert again.model.snapshot.user_trained[again.model.snapshot.user_index["moving-user"]]
    finally:
        again.close()


def test_fold_in_weights_recent_events_more(synthetic):
    cat, artifacts = synthetic
    model = HybridModel.load(artifacts)
    model.recency_half_life_days = 1.0
    jazz = [it.item_id for it in cat.items if it.category == "jazz"][:3]
    running = [it.item_id for it in cat.items if it.category == "running"][:3]
    now = 1_000_000_000.0
    old, new = now - 10 * 86400, now - 60
    fold = model.fold_in("brand-new", [FreshEvent(i, "like", 1.0, old) for i in jazz] +
                         [FreshEvent(i, "like", 1.0, new) for i in running], now=now)
    assert fold.base is None and fold.personalised
    w = dict(zip(fold.rows.tolist(), fold.weights))
    index = model.item_index()
    assert w[index[running[0]]] == pytest.approx(recency_decay(60, 1.0))
    assert w[index[jazz[0]]] == pytest.approx(recency_decay(10 * 86400, 1.0)) and w[index[jazz[0]]] < 0.02
    scores = model.snapshot.item_repr @ fold.vector + model.snapshot.item_bias
    top = [model.snapshot.item_ids[j] for j in np.argsort(-scores)[:10] if model.snapshot.item_ids[j] not in jazz + running]
    assert [_category(cat, i) for i in top[:3]] == ["running"] * 3


def test_training_recency(synthetic, tmp_path):
    cat, artifacts = synthetic
    model = HybridModel.load(artifacts)
    assert model.trained_users == set(model.user_ids)
    # training-time recency: the matrix weights decay with age from the user's newest event
    model.recency_half_life_days = 1.0
    uid = model.user_ids[0]
    times = model.pair_time[uid]
    newest = max(times, key=times.get)
    oldest = min(times, key=times.get)
    m = model._interaction_matrix().tocsr()
    index = model._live_item_index()
    assert m[0, index[newest]] == pytest.approx(model.positives[uid][newest])
    assert m[0, index[oldest]] < m[0, index[newest]] or times[oldest] == times[newest]
