"""Query scoring pieces: co-occurrence maths, the blend and its calibration."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fusion.features import auto_identity_weight
from fusion.query import QueryBlend, blend, calibrate_blend, cooccurrence_scores, standardise


def test_cooccurrence_scores_match_definitions():
    seen = sp.csr_matrix(np.array([[1, 1, 0, 0],
                                   [1, 1, 1, 0],
                                   [0, 1, 1, 0],
                                   [0, 0, 0, 1]], np.float32))
    counts = np.asarray(seen.sum(axis=0)).ravel()
    cosine, assoc = cooccurrence_scores(seen, np.array([0]), counts)
    # co(j, 0) = [2, 2, 1, 0]; n_0 = 2; n = [2, 3, 2, 1]
    np.testing.assert_allclose(assoc, [1.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(cosine, [2 / 2, 2 / np.sqrt(6), 1 / 2, 0.0])
    cos2, assoc2 = cooccurrence_scores(seen, np.array([0, 3]), counts, np.array([1.0, 2.0]))
    np.testing.assert_allclose(assoc2, assoc + 2 * np.array([0, 0, 0, 1.0]))


def test_cooccurrence_scores_equal_the_dense_definition_on_a_random_matrix():
    """The mat-vec form (no column slice of ``seen``) against co = seen.T @ seen, written out:
    repeated seeds and weights included, and items nobody took (n_j = 0)."""
    rng = np.random.default_rng(3)
    dense = (rng.random((60, 40)) < 0.15).astype(np.float32)
    dense[:, 7] = 0.0
    seen = sp.csr_matrix(dense)
    counts = dense.sum(axis=0)
    seeds, w = np.array([3, 11, 3, 7, 25]), np.array([1.0, 0.5, 2.0, 1.0, 0.25])
    co = dense.T.astype(np.float64) @ dense
    n_l = np.maximum(counts[seeds], 1.0)
    cosine, assoc = cooccurrence_scores(seen, seeds, counts, w)
    np.testing.assert_allclose(cosine, (co[:, seeds] / np.sqrt(np.maximum(counts, 1.0))[:, None] / np.sqrt(n_l)) @ w,
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(assoc, (co[:, seeds] / n_l) @ w, rtol=1e-6, atol=1e-9)


def test_blend_standardises_and_falls_back_to_popularity():
    pop = np.array([5.0, 1.0, 3.0])
    parts = {"popularity": pop, "content": np.array([0.0, 10.0, 0.0])}
    w = QueryBlend(neighbours=1.0, content=0.0, popularity=0.0)
    np.testing.assert_allclose(blend(parts, w), standardise(pop))  # nothing weighted present
    both = blend(parts, QueryBlend(neighbours=0.0, content=2.0, popularity=1.0))  # z: 2*[-.71, 1.41, -.71] + [1.22, -1.22, 0]
    assert np.argmax(both) == 1
    assert QueryBlend().for_query(has_liked=False).content == QueryBlend().content_description


def test_calibration_finds_the_informative_component():
    rng = np.random.default_rng(0)
    comps, targets, excludes = [], [], []
    for _ in range(40):
        truth = rng.permutation(50)[:5]
        signal = rng.normal(size=50)
        signal[truth] += 3.0
        comps.append({"neighbours": signal, "popularity": rng.normal(size=50), "content": rng.normal(size=50)})
        targets.append(truth)
        excludes.append(np.zeros(0, np.int64))
    best, score = calibrate_blend(comps, targets, excludes, k=5)
    assert best.neighbours > 0 and best.neighbours >= 4 * max(best.popularity, best.content)
    assert score > 0.6


def test_identity_weight_follows_the_evidence_per_item():
    assert auto_identity_weight(3) == 1.0  # sparse: content weighs as much as the id
    assert 1.7 < auto_identity_weight(53) < 1.75  # MovieLens 100K
    assert auto_identity_weight(5000) == 2.0
