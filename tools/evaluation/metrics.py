"""Ranking metrics computed from dense score matrices.

Conventions shared by every function here:

* ``scores`` is (n_users, n_items), higher is better; row r belongs to row r of
  ``test`` / ``exclude``.
* Relevance is binary: an item is relevant for a user when it is in that user's
  row of ``test``.
* ``exclude`` (csr, same shape) holds items that must not be ranked at all —
  the training interactions of warm users, the "known" items of cold users.
* ``candidates`` (bool, n_items) optionally restricts ranking to a subset of the
  catalog (only cold items in the cold-item protocol). Relevant items outside
  the candidates are dropped from the user's test set.
* Users left with no relevant item are skipped: per-user arrays only hold rows
  for ``evaluable_users(...)``, in order.
* Ties in the top-k are broken deterministically: towards the lower item index,
  or, with ``tie_seed``, by a fixed seeded permutation of the items (so that a
  constant scorer does not profit from whatever the id order correlates with).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "RankedLists", "rank_top_k", "evaluable_users", "precision_at_k", "recall_at_k", "ndcg_at_k",
    "auc", "catalog_coverage", "novelty", "item_popularity", "evaluate_scores", "UserMetrics",
]


def _check(scores: np.ndarray, test: sp.spmatrix, exclude: sp.spmatrix | None,
           candidates: np.ndarray | None) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix | None]:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if test.shape != scores.shape:
        raise ValueError(f"test shape {test.shape} != scores shape {scores.shape}")
    if exclude is not None and exclude.shape != scores.shape:
        raise ValueError(f"exclude shape {exclude.shape} != scores shape {scores.shape}")
    if candidates is not None and candidates.shape != (scores.shape[1],):
        raise ValueError(f"candidates must be a bool mask of length {scores.shape[1]}")
    test = sp.csr_matrix(test, copy=True)
    test.eliminate_zeros()
    test.data[:] = 1
    excl = None
    if exclude is not None:
        excl = sp.csr_matrix(exclude, copy=True)
        excl.eliminate_zeros()
        excl.data[:] = 1
    return scores, test, excl


def _rankable(shape: tuple[int, int], exclude: sp.csr_matrix | None,
              candidates: np.ndarray | None) -> np.ndarray:
    """Dense bool mask of the (user, item) cells that may appear in a ranking."""
    if candidates is None:
        mask = np.ones(shape, dtype=bool)
    else:
        mask = np.broadcast_to(np.asarray(candidates, dtype=bool), shape).copy()
    if exclude is not None:
        coo = exclude.tocoo()
        mask[coo.row, coo.col] = False
    return mask


def _relevant(test: sp.csr_matrix, rankable: np.ndarray) -> sp.csr_matrix:
    """Test items that can actually be ranked (inside candidates, not excluded)."""
    coo = test.tocoo()
    keep = rankable[coo.row, coo.col]
    rel = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (coo.row[keep], coo.col[keep])),
                        shape=test.shape)
    rel.sum_duplicates()
    rel.data[:] = 1
    return rel


@dataclass
class RankedLists:
    """Top-k item indices per row, best first; -1 marks slots with nothing left to rank."""

    items: np.ndarray  # (n_rows, k) int64

    @property
    def k(self) -> int:
        return int(self.items.shape[1])


def _tie_permutation(n_items: int, tie_seed: int | None) -> np.ndarray | None:
    return None if tie_seed is None else np.random.default_rng(tie_seed).permutation(n_items)


def rank_top_k(scores: np.ndarray, k: int, exclude: sp.spmatrix | None = None,
               candidates: np.ndarray | None = None, tie_seed: int | None = None) -> RankedLists:
    """Top-k items per row by score, excluded / non-candidate items never ranked."""
    scores = np.asarray(scores)
    excl = None if exclude is None else sp.csr_matrix(exclude)
    return _top_k(scores, k, _rankable(scores.shape, excl, candidates), _tie_permutation(scores.shape[1], tie_seed))


def _top_k(scores: np.ndarray, k: int, rankable: np.ndarray, tie_perm: np.ndarray | None = None) -> RankedLists:
    """``tie_perm`` lists the columns in tie-break order (None: item index order)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    n_rows, n_items = scores.shape
    kk = min(k, n_items)
    masked = np.where(rankable, scores.astype(np.float64, copy=False), -np.inf)
    if tie_perm is not None:
        masked = masked[:, tie_perm]
    # The kk-th largest value per row; everything above it is in, ties at it are
    # taken in column order until the row has exactly kk entries.
    kth = np.partition(masked, n_items - kk, axis=1)[:, n_items - kk][:, None]
    above = masked > kth
    tied = masked == kth
    room = kk - above.sum(axis=1, keepdims=True)
    selected = above | (tied & (np.cumsum(tied, axis=1) <= room))
    rows, cols = np.nonzero(selected)  # row-major: exactly kk per row
    vals = masked[rows, cols]
    order = np.lexsort((cols, -vals, rows))
    top = cols[order].reshape(n_rows, kk).astype(np.int64)
    if tie_perm is not None:
        top = tie_perm[top]
    top[np.isneginf(vals[order]).reshape(n_rows, kk)] = -1
    if kk < k:
        top = np.hstack([top, np.full((n_rows, k - kk), -1, dtype=np.int64)])
    return RankedLists(top)


def _hits(top: RankedLists, relevant: sp.csr_matrix) -> np.ndarray:
    """(n_rows, k) bool: is the item in slot j relevant for the row."""
    dense = relevant.toarray() > 0
    valid = top.items >= 0
    return np.take_along_axis(dense, np.where(valid, top.items, 0), axis=1) & valid


def evaluable_users(test: sp.spmatrix, exclude: sp.spmatrix | None = None,
                    candidates: np.ndarray | None = None) -> np.ndarray:
    """Row indices with at least one relevant, rankable test item (the rows every metric reports)."""
    test = sp.csr_matrix(test)
    excl = None if exclude is None else sp.csr_matrix(exclude)
    rel = _relevant(test, _rankable(test.shape, excl, candidates))
    return np.flatnonzero(rel.getnnz(axis=1) > 0)


@dataclass
class UserMetrics:
    """Per-user metric arrays (aligned with ``users``) plus the top-k lists of those users."""

    users: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray
    auc: np.ndarray  # NaN where a user has no negative item left
    top: RankedLists


def evaluate_scores(scores: np.ndarray, test: sp.spmatrix, k: int = 10, exclude: sp.spmatrix | None = None,
                    candidates: np.ndarray | None = None, tie_seed: int | None = None) -> UserMetrics:
    """All per-user ranking metrics in one pass over the score matrix."""
    scores, test, excl = _check(scores, test, exclude, candidates)
    rankable = _rankable(scores.shape, excl, candidates)
    rel = _relevant(test, rankable)
    users = np.flatnonzero(rel.getnnz(axis=1) > 0)
    scores, rankable, rel = scores[users], rankable[users], rel[users]
    top = _top_k(scores, k, rankable, _tie_permutation(scores.shape[1], tie_seed))
    hits = _hits(top, rel)
    n_rel = rel.getnnz(axis=1).astype(np.float64)
    n_hits = hits.sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k).astype(np.int64) - 1]
    return UserMetrics(users=users, precision=n_hits / k, recall=n_hits / n_rel, ndcg=dcg / ideal,
                       auc=_auc(scores, rel, rankable), top=top)


def _auc(scores: np.ndarray, rel: sp.csr_matrix, rankable: np.ndarray) -> np.ndarray:
    """P(score of a random relevant item > score of a random rankable non-relevant item), ties count 1/2."""
    negatives = rankable.copy()
    coo = rel.tocoo()
    negatives[coo.row, coo.col] = False
    n_neg = negatives.sum(axis=1)
    # Sorting each row with non-negatives pushed to +inf puts the row's negative
    # scores first, ascending; "negatives strictly below s" is then a searchsorted.
    neg_sorted = np.sort(np.where(negatives, scores.astype(np.float64, copy=False), np.inf), axis=1)
    out = np.full(scores.shape[0], np.nan)
    for r in range(scores.shape[0]):  # one vectorised search per user, never per item
        if n_neg[r] == 0:
            continue
        pos = rel.indices[rel.indptr[r]:rel.indptr[r + 1]]
        row, s = neg_sorted[r, :n_neg[r]], scores[r, pos]
        below = np.searchsorted(row, s, side="left")
        tied = np.searchsorted(row, s, side="right") - below
        out[r] = (below + 0.5 * tied).mean() / n_neg[r]
    return out


def precision_at_k(scores: np.ndarray, test: sp.spmatrix, k: int = 10, exclude: sp.spmatrix | None = None,
                   candidates: np.ndarray | None = None) -> np.ndarray:
    """Hits in the top k divided by k, per evaluable user."""
    return evaluate_scores(scores, test, k, exclude, candidates).precision


def recall_at_k(scores: np.ndarray, test: sp.spmatrix, k: int = 10, exclude: sp.spmatrix | None = None,
                candidates: np.ndarray | None = None) -> np.ndarray:
    """Hits in the top k divided by the user's number of relevant items."""
    return evaluate_scores(scores, test, k, exclude, candidates).recall


def ndcg_at_k(scores: np.ndarray, test: sp.spmatrix, k: int = 10, exclude: sp.spmatrix | None = None,
              candidates: np.ndarray | None = None) -> np.ndarray:
    """Binary-relevance DCG@k (1/log2(rank+1)) over the ideal DCG@k, per evaluable user."""
    return evaluate_scores(scores, test, k, exclude, candidates).ndcg


def auc(scores: np.ndarray, test: sp.spmatrix, exclude: sp.spmatrix | None = None,
        candidates: np.ndarray | None = None) -> np.ndarray:
    """Per-user ROC AUC: the probability that a random positive outranks a random negative.

    Positives are the user's test items, negatives every other rankable item (not
    in test, not excluded, inside candidates) — the definition of
    ``lightfm.evaluation.auc_score`` with ``train_interactions`` as ``exclude``.
    One deliberate difference: a positive/negative tie counts 1/2 (Mann-Whitney),
    where LightFM counts it as a loss; with tie-free scores the two agree, and a
    constant scorer gets 0.5 here instead of 0. NaN when no negative is left.
    """
    return evaluate_scores(scores, test, 1, exclude, candidates).auc


def item_popularity(train: sp.spmatrix) -> np.ndarray:
    """Share of users who interacted with each item in ``train``, add-one smoothed so unseen items stay finite."""
    train = sp.csr_matrix(train)
    counts = np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float64)
    return (counts + 1.0) / (train.shape[0] + 1.0)


def catalog_coverage(top: RankedLists | np.ndarray, candidates: np.ndarray | None = None,
                     n_items: int | None = None) -> float:
    """Share of candidate items that appear in at least one top-k list."""
    items = top.items if isinstance(top, RankedLists) else np.asarray(top)
    if candidates is None:
        if n_items is None:
            raise ValueError("catalog_coverage needs candidates or n_items")
        candidates = np.ones(n_items, dtype=bool)
    shown = np.unique(items[items >= 0])
    n_candidates = int(candidates.sum())
    return float(candidates[shown].sum() / n_candidates) if n_candidates else 0.0


def novelty(top: RankedLists | np.ndarray, popularity: np.ndarray) -> float:
    """Mean self-information -log2(popularity) of the recommended items (higher = less mainstream)."""
    items = top.items if isinstance(top, RankedLists) else np.asarray(top)
    shown = items[items >= 0]
    return float(np.mean(-np.log2(popularity[shown]))) if shown.size else 0.0
