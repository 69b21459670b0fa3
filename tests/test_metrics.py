"""Ranking metrics against hand-computed values and against LightFM's own evaluation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp

from tools.evaluation.metrics import (
    auc, catalog_coverage, evaluable_users, evaluate_scores, item_popularity, ndcg_at_k, novelty,
    precision_at_k, rank_top_k, recall_at_k,
)


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), n_items))


# One user, 6 items. Ranking by score: 5, 0, 3, 2, 4, 1.
SCORES = np.array([[0.9, 0.1, 0.4, 0.8, 0.3, 1.0]])
TEST = csr([[0, 2, 4]], 6)


def test_precision_recall_ndcg_by_hand() -> None:
    # top-3 = [5, 0, 3]: one hit (item 0) at rank 2.
    assert precision_at_k(SCORES, TEST, k=3) == pytest.approx([1 / 3])
    assert recall_at_k(SCORES, TEST, k=3) == pytest.approx([1 / 3])
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert ndcg_at_k(SCORES, TEST, k=3) == pytest.approx([(1 / np.log2(3)) / ideal])


def test_exclude_removes_train_items_from_ranking() -> None:
    # Excluding 5 and 0 (train items): ranking 3, 2, 4, 1 -> top-2 = [3, 2], one hit at rank 2.
    exclude = csr([[5, 0]], 6)
    top = rank_top_k(SCORES, 2, exclude=exclude)
    assert top.items.tolist() == [[3, 2]]
    # Test item 0 is excluded too: it no longer counts as relevant (2 relevant left).
    assert recall_at_k(SCORES, TEST, k=2, exclude=exclude) == pytest.approx([1 / 2])
    ideal = 1 + 1 / np.log2(3)
    assert ndcg_at_k(SCORES, TEST, k=2, exclude=exclude) == pytest.approx([(1 / np.log2(3)) / ideal])


def test_candidate_mask_restricts_ranking_and_relevance() -> None:
    cand = np.array([False, True, True, False, True, False])
    top = rank_top_k(SCORES, 2, candidates=cand)
    assert top.items.tolist() == [[2, 4]]
    # Relevant = {2, 4} (0 is not a candidate): both in the top 2.
    assert precision_at_k(SCORES, TEST, k=2, candidates=cand) == pytest.approx([1.0])
    assert auc(SCORES, TEST, candidates=cand) == pytest.approx([1.0])  # negatives: item 1 only


def test_auc_by_hand() -> None:
    # Positives 0 (0.9), 2 (0.4), 4 (0.3); negatives 1 (0.1), 3 (0.8), 5 (1.0).
    # Negatives below each positive: 0 -> 2 (1, 3), 2 -> 1, 4 -> 1.  AUC = 4 / 9.
    assert auc(SCORES, TEST) == pytest.approx([4 / 9])


def test_ties_are_deterministic() -> None:
    scores = np.zeros((2, 5))
    test = csr([[3], [0, 4]], 5)
    top = rank_top_k(scores, 3)
    assert top.items.tolist() == [[0, 1, 2], [0, 1, 2]]  # lower index first
    assert precision_at_k(scores, test, k=3) == pytest.approx([0.0, 1 / 3])
    # A seeded permutation breaks ties the same way on every call, differently from index order.
    a = rank_top_k(np.zeros((1, 50)), 10, tie_seed=3).items
    assert (a == rank_top_k(np.zeros((1, 50)), 10, tie_seed=3).items).all()
    assert a.tolist() != [list(range(10))]
    # Ties with negatives count 1/2: a constant scorer has AUC 0.5.
    assert auc(scores, test) == pytest.approx([0.5, 0.5])
    # Partial tie at the k boundary: items 1 and 3 tie at 0.5, the lower index wins the last slot.
    top = rank_top_k(np.array([[0.2, 0.5, 0.9, 0.5]]), 2)
    assert top.items.tolist() == [[2, 1]]


def test_fewer_rankable_items_than_k_pads_with_minus_one() -> None:
    exclude = csr([[0, 1, 2]], 4)
    top = rank_top_k(np.array([[4.0, 3.0, 2.0, 1.0]]), 3, exclude=exclude)
    assert top.items.tolist() == [[3, -1, -1]]
    assert precision_at_k(np.array([[4.0, 3.0, 2.0, 1.0]]), csr([[3]], 4), k=3, exclude=exclude) == pytest.approx([1 / 3])


def test_users_without_relevant_items_are_skipped() -> None:
    scores = np.random.default_rng(0).random((4, 6))
    test = csr([[1], [], [2, 3], []], 6)
    assert evaluable_users(test).tolist() == [0, 2]
    res = evaluate_scores(scores, test, k=2)
    assert res.users.tolist() == [0, 2]
    assert res.precision.shape == res.auc.shape == (2,)
    # A user whose only test item is excluded is skipped as well.
    assert evaluable_users(test, exclude=csr([[1], [], [], []], 6)).tolist() == [2]


def test_coverage_and_novelty() -> None:
    top = np.array([[0, 1], [1, -1]])
    assert catalog_coverage(top, n_items=4) == pytest.approx(0.5)
    assert catalog_coverage(top, candidates=np.array([True, False, False, True])) == pytest.approx(0.5)
    train = csr([[0, 1], [1], [1, 2]], 4)  # counts 1, 3, 1, 0 over 3 users
    pop = item_popularity(train)
    assert pop == pytest.approx([2 / 4, 4 / 4, 2 / 4, 1 / 4])
    assert novelty(top, pop) == pytest.approx(np.mean([1.0, 0.0, 0.0]))


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="NaN"):
        evaluate_scores(np.array([[np.nan, 1.0]]), csr([[0]], 2))
    with pytest.raises(ValueError, match="shape"):
        evaluate_scores(np.zeros((2, 3)), csr([[0]], 3))


def test_matches_lightfm_evaluation() -> None:
    lightfm = pytest.importorskip("lightfm")
    from lightfm.evaluation import auc_score
    from lightfm.evaluation import precision_at_k as lfm_precision
    from lightfm.evaluation import recall_at_k as lfm_recall

    rng = np.random.default_rng(0)
    n_users, n_items = 40, 60
    # Two taste groups so the model learns something non-trivial.
    group = rng.integers(0, 2, n_users)
    prob = np.where(group[:, None] == (np.arange(n_items)[None, :] % 2), 0.35, 0.05)
    inter = sp.csr_matrix((rng.random((n_users, n_items)) < prob).astype(np.float32))
    mask = rng.random(inter.nnz) < 0.25
    coo = inter.tocoo()
    test = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=inter.shape)
    train = sp.csr_matrix((coo.data[~mask], (coo.row[~mask], coo.col[~mask])), shape=inter.shape)
    model = lightfm.LightFM(no_components=8, loss="warp", random_state=0)
    model.fit(train, epochs=5, num_threads=1)

    uu, ii = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    scores = model.predict(uu.ravel().astype(np.int32), ii.ravel().astype(np.int32)).reshape(n_users, n_items)
    assert len(np.unique(scores)) == scores.size  # tie-free, where both AUC definitions agree
    ours = evaluate_scores(scores, test, k=5, exclude=train)
    assert ours.users.tolist() == np.flatnonzero(test.getnnz(axis=1) > 0).tolist()  # LightFM's rows too
    np.testing.assert_allclose(ours.auc, auc_score(model, test, train), atol=1e-6)
    np.testing.assert_allclose(ours.precision, lfm_precision(model, test, train, k=5), atol=1e-6)
    np.testing.assert_allclose(ours.recall, lfm_recall(model, test, train, k=5), atol=1e-6)


def test_movielens_sized_matrix_is_fast() -> None:
    rng = np.random.default_rng(1)
    n_users, n_items = 943, 1682
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    train = sp.random(n_users, n_items, density=0.06, format="csr", random_state=1)
    test = sp.random(n_users, n_items, density=0.006, format="csr", random_state=2)
    start = time.perf_counter()
    res = evaluate_scores(scores, test, k=10, exclude=train)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    assert 0.45 < np.nanmean(res.auc) < 0.55  # random scores
