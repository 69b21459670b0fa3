"""Explanations add up (issue 16, part 3): listed components sum to the score, components that did
not apply are absent, a modality tie is reported as a tie, exhausted interests are said so."""

from __future__ import annotations

import numpy as np
import pytest

from fusion import explain
from fusion.hybrid import HybridModel
from fusion.query import Query
from fusion.synthetic import make_catalog
from tests.test_fusion_hybrid import small_config

TOL = 2e-3  # components are rounded to 4 decimals each


@pytest.fixture(scope="module")
def model():
    catalog = make_catalog(n_items=90, n_users=60, seed=2)
    return HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config(epochs=2)), catalog


def _sums_to_score(recs):
    assert recs
    for r in recs:
        parts = r.explanation["components"]
        assert abs(sum(parts.values()) - r.score) <= TOL * max(1, len(parts)), (r.score, parts)


def test_known_user_components_sum_to_the_score(model):
    m, _ = model
    for user in m.known_users()[:5]:
        _sums_to_score(m.recommend(user, k=8))


def test_pure_query_lists_no_liked_or_neighbour_parts_and_sums_to_the_score(model):
    m, catalog = model
    recs = m.recommend_for_query(Query(text_vec=catalog.embeddings.vectors["text"][0]), k=8)
    _sums_to_score(recs)
    for r in recs:
        assert not {"liked", "neighbours", "cooccurrence", "association"} & set(r.explanation["components"])


def test_liked_items_query_sums_to_the_score(model):
    m, _ = model
    ids = m.item_ids()
    _sums_to_score(m.recommend_for_query(Query(liked_item_ids=(ids[3], ids[7])), k=8))


def test_tied_modalities_are_reported_as_a_tie(model):
    m, _ = model
    snap = m.snapshot
    j = next(j for j in range(len(snap.item_ids)) if sum(bool(snap.masks[x][j]) for x in snap.masks) > 1)
    # A profile no modality is close to: every present modality gets the same share (1/n each).
    flat = np.zeros(m.space.dim, np.float32)
    e = explain.explain(snap, m.codebook, m.space, j, np.zeros(m.codebook.size), flat, np.zeros(0, np.int64), {})
    assert e["modality"] is None and e["modality_tie"] is True
    assert len(set(e["modality_shares"].values())) == 1


def test_exhausted_main_interests_are_said_so(model):
    m, _ = model
    snap = m.snapshot
    interest = np.zeros(m.codebook.size, np.float32)
    j = 0
    own = set(int(c) for c in snap.item_assign.clusters[j])
    others = [c for c in range(m.codebook.size) if c not in own]
    interest[others[:3]] = [0.6, 0.3, 0.09]
    interest[list(own)[0]] = 0.01  # the item's cluster is a crumb of this user's interest
    e = explain.explain(snap, m.codebook, m.space, j, interest, None, np.zeros(0, np.int64), {})
    assert "outside your main interests" in e["note"]
    interest[list(own)[0]] = 0.4  # now one of the main interests (at least half the top share): no note
    e = explain.explain(snap, m.codebook, m.space, j, interest, None, np.zeros(0, np.int64), {})
    assert "note" not in e
