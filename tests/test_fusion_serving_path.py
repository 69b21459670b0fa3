"""HybridModel's serving-path API: per-row explanations, one-pass query scoring, shared snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.hybrid import HybridModel
from fusion.query import Query
from fusion.synthetic import make_catalog
from mixrec.catalog import Interaction
from tests.test_fusion_hybrid import small_config


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(n_items=120, n_users=80, seed=1)


@pytest.fixture
def model(catalog):
    return HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config(epochs=3))


def test_explain_rows_matches_recommend_for_a_user(model):
    user = model.known_users()[0]
    recs = model.recommend(user, k=5)
    index = model.item_index()
    rows = np.array([index[r.item_id] for r in recs])
    assert model.explain_rows(user, rows) == [r.explanation for r in recs]
    given = np.array([r.score for r in recs])
    assert model.explain_rows(user, rows, given) == [r.explanation for r in recs]


def test_scored_query_ranks_and_explains_without_rescoring(model, catalog):
    query = Query(text_vec=catalog.embeddings.vectors["text"][0], liked_item_ids=(model.item_ids()[3],))
    recs = model.recommend_for_query(query, k=5)
    scored = model.score_query(query)
    assert np.allclose(scored.scores, model.score_all(query))
    rows = np.argsort(-scored.scores)[:4]
    expl = model.explain_rows(scored, rows)
    assert [set(e["components"]) for e in expl] == [set(scored.parts)] * 4
    for e, j in zip(expl, rows):
        assert e["components"]["popularity"] == round(float(scored.parts["popularity"][j]), 4)
    index = model.item_index()
    by_query = model.explain_rows(query, np.array([index[r.item_id] for r in recs]))
    assert by_query == [r.explanation for r in recs]
    assert model.user_interests(scored, top=3) == model.user_interests(query, top=3)


def test_feedback_publishes_a_snapshot_sharing_read_only_item_arrays(model):
    before = model.snapshot
    user, item = model.known_users()[0], model.item_ids()[-1]
    model.add_interactions([Interaction(user_id=user, item_id=item, weight=1.0)])
    after = model.snapshot
    assert after is not before and item in {after.item_ids[j] for j in after.seen[after.user_index[user]].indices}
    for name in ("fused", "item_repr", "item_bias", "item_types"):
        assert getattr(after, name) is getattr(before, name), name
        with pytest.raises(ValueError):
            getattr(after, name)[0] = 0
    assert all(after.per_modality[m] is before.per_modality[m] for m in before.per_modality)
    assert after.item_index is before.item_index
    model.fit_partial(epochs=1)  # training changes item parameters: new representations
    assert model.snapshot.item_repr is not before.item_repr


def test_patched_item_state_equals_a_full_rebuild(model, catalog):
    sub = catalog.items[:6]
    new = [it.model_copy(update={"item_id": f"new-{it.item_id}"}) for it in sub]
    emb = catalog.embeddings.subset([it.item_id for it in sub])
    emb = type(emb)([it.item_id for it in new], emb.vectors, emb.masks, dict(emb.encoders))
    model.add_items(new, emb)
    snap = model.snapshot
    assert snap.item_ids == tuple(it.item_id for it in model.items)
    assert snap.item_index == {iid: i for i, iid in enumerate(snap.item_ids)}
    assert list(snap.item_types) == [it.type for it in model.items]
    model._reprs = None  # appended rows were represented alone: same as representing all
    full_repr, full_bias = model._item_representations(model._item_state().features)
    assert np.array_equal(snap.item_repr, full_repr) and np.array_equal(snap.item_bias, full_bias)
    model.remove_items([model.item_ids()[1], new[0].item_id])
    user = model.known_users()[0]
    model.add_interactions([Interaction(user_id=user, item_id=new[1].item_id, weight=1.0)])
    model.fit_partial(epochs=1)  # new[1] gains its identity feature: its row is rebuilt in place
    state = model._item_state()
    assign, tokens, item_x = state.assign, state.tokens, state.features
    model._item_rows = None
    full = model._item_state()
    full_assign, full_tokens, full_x = full.assign, full.tokens, full.features
    assert np.array_equal(assign.clusters, full_assign.clusters) and np.allclose(assign.weights, full_assign.weights)
    assert np.array_equal(tokens.clusters, full_tokens.clusters)
    assert item_x.shape == full_x.shape
    for part in ("indptr", "indices", "data"):  # same rows in the same column order: same float sums
        assert np.array_equal(getattr(item_x, part), getattr(full_x, part)), part
