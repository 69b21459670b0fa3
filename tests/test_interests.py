"""Interest distributions (fusion/interests.py) summed over the interactions, not the catalogue."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fusion.codebook import SoftAssignment
from fusion.interests import history_interests, query_interests


def assignment(n: int = 400, k: int = 12, m: int = 3, seed: int = 0) -> SoftAssignment:
    rng = np.random.default_rng(seed)
    clusters = np.stack([rng.choice(k, m, replace=False) for _ in range(n)])
    weights = rng.random((n, m)).astype(np.float32)
    weights /= weights.sum(axis=1, keepdims=True)
    weights[:5] = 0  # items with no content: no membership
    return SoftAssignment(clusters, weights)


def membership(a: SoftAssignment, k: int) -> np.ndarray:
    """The definition: item i's row holds weight w on each of its clusters."""
    out = np.zeros((a.clusters.shape[0], k), np.float32)
    for i, (cs, ws) in enumerate(zip(a.clusters, a.weights)):
        for c, w in zip(cs, ws):
            out[i, c] += w
    return out


def test_dense_rows_are_the_memberships_of_those_items_only():
    a = assignment()
    full = membership(a, 12)
    assert np.allclose(a.dense(12), full, atol=1e-6)
    rows = np.array([3, 7, 7, 250])
    assert np.allclose(a.dense(12, rows), full[rows], atol=1e-6)


def test_history_interests_equal_the_product_with_every_items_memberships():
    a = assignment()
    liked = sp.random(30, 400, density=0.05, random_state=1, format="csr")
    disliked = sp.random(30, 400, density=0.01, random_state=2, format="csr")
    inter = (liked - disliked).tocsr()
    binary = inter.copy()
    binary.data = (binary.data > 0).astype(np.float32)  # negative feedback adds nothing
    want = np.asarray(binary @ membership(a, 12))
    sums = want.sum(axis=1, keepdims=True)
    want = np.where(sums > 0, want / np.maximum(sums, 1e-12), 0)
    got = history_interests(inter, a, 12)
    assert got.shape == (30, 12) and np.allclose(got, want, atol=1e-6)
    assert np.allclose(got[np.asarray(binary.sum(axis=1)).ravel() > 0].sum(axis=1), 1, atol=1e-5)


def test_query_interests_average_the_liked_items_memberships():
    a = assignment()

    class NoCodebook:
        size = 12

    got = query_interests(NoCodebook(), a, None, np.array([10, 11]))
    want = membership(a, 12)[[10, 11]].mean(axis=0)
    assert np.allclose(got, want / want.sum(), atol=1e-6)
