"""fusion/scoring.py is where every score is computed, and its terms add up to the scores (issue 10)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fusion import scoring
from fusion.hybrid import HybridModel
from fusion.query import Query
from fusion.synthetic import make_catalog
from mixrec.config import REPO_ROOT
from mixrec.ranking import top_k
from tests.test_fusion_hybrid import small_config


@pytest.fixture(scope="module")
def model():
    catalog = make_catalog(n_items=90, n_users=60, seed=2)
    return HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config(epochs=2))


# The writer computes the representations themselves (features @ LightFM parameters) when it publishes.
REPRESENTATION_LINES = re.compile(r"@ lfm\.(item|user)_|@ user_(emb|b)\b")


def test_no_score_arithmetic_outside_the_scoring_module():
    """A product with item representations appears in fusion/scoring.py only."""
    product = re.compile(r"(item_repr|item_bias|_item_vecs)\b[^#\n]*@|@[^#\n]*\b(item_repr|item_bias)\b")
    found = []
    for folder in ("fusion", "services", "mixrec"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if path == REPO_ROOT / "fusion" / "scoring.py" or "evaluation/baselines" in str(path):
                continue  # baselines.py scores other models (plain LightFM), not mixrec's
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if product.search(code) and not REPRESENTATION_LINES.search(code) and "``" not in code:
                    found.append(f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}")
    assert not found, "score arithmetic outside fusion/scoring.py:\n" + "\n".join(found)


def test_user_score_terms_add_up_to_the_score(model):
    snap = model.snapshot
    u = snap.user_row(model.known_users()[0])
    rows = np.arange(len(snap.item_ids))
    terms = scoring.user_score_terms(snap, snap.user_repr[u], rows)
    np.testing.assert_allclose(sum(terms.values()), model.score_all(model.known_users()[0]), rtol=1e-5, atol=1e-6)


def test_query_score_terms_add_up_to_the_blend(model):
    snap = model.snapshot
    for query in (Query(liked_item_ids=(snap.item_ids[3], snap.item_ids[7])),
                  Query(text_vec=np.ones(model.space.dims["text"], np.float32))):
        scored = model.score_query(query)
        rows = top_k(scored.scores, 10)
        terms = scoring.query_score_terms(scored, rows)
        assert terms
        np.testing.assert_allclose(sum(terms.values()), scored.scores[rows], rtol=1e-9, atol=1e-9)


def test_ann_vectors_score_like_user_scores(model):
    snap = model.snapshot
    user = snap.user_repr[0]
    np.testing.assert_allclose(scoring.ann_vectors(snap) @ scoring.ann_query(user), scoring.user_scores(snap, user),
                               rtol=1e-5, atol=1e-5)


def test_top_k_is_best_first_with_ties_in_row_order_and_skips_non_finite():
    scores = np.array([0.5, np.nan, 2.0, 0.5, -np.inf, 2.0, 1.0])
    assert top_k(scores, 4).tolist() == [2, 5, 6, 0]
    assert top_k(scores, 10).tolist() == [2, 5, 6, 0, 3]
    assert top_k(scores, 2, np.array([0, 1, 3, 6])).tolist() == [6, 0]
    assert top_k(scores, 0).size == 0
