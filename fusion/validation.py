"""The two numbers training-time calibration (fusion/calibration.py) compares candidates on.

NDCG@k and AUC per user over dense score rows, with excluded items and an optional candidate
mask. tools/evaluation/metrics.py is the evaluation's full set, but fusion may not import tools
(layers), and calibration needs only these two, on a few thousand validation users at most.
Conventions follow tools/evaluation/metrics.py: binary relevance, ties in AUC count 1/2.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rankable_mask(n_rows: int, n_items: int, exclude: Sequence[np.ndarray] | None,
                  candidates: np.ndarray | None) -> np.ndarray:
    """(n_rows, n_items) bool: the items each row may rank (candidates minus its excluded items)."""
    mask = np.ones((n_rows, n_items), bool) if candidates is None else np.tile(np.asarray(candidates, bool),
                                                                                 (n_rows, 1))
    for r, ex in enumerate(exclude or ()):
        mask[r, np.asarray(ex, np.int64)] = False
    return mask


def target_mask(targets: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    out = np.zeros((len(targets), n_items), bool)
    for r, t in enumerate(targets):
        out[r, np.asarray(t, np.int64)] = True
    return out


def ndcg_at_k(scores: np.ndarray, relevant: np.ndarray, rankable: np.ndarray, k: int = 10) -> np.ndarray:
    """Per row: DCG@k of the rankable items by score over the ideal DCG@k (NaN: no relevant rankable item)."""
    rel = relevant & rankable
    s = np.where(rankable, np.asarray(scores, np.float64), -np.inf)
    kk = min(k, s.shape[1])
    top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable"), axis=1)
    hits = np.take_along_axis(rel, top, axis=1) & np.isfinite(np.take_along_axis(s, top, axis=1))
    disc = 1.0 / np.log2(np.arange(2, kk + 2))
    n_rel = rel.sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_rel, kk)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, (hits * disc).sum(axis=1) / ideal, np.nan)


def auc(scores: np.ndarray, relevant: np.ndarray, rankable: np.ndarray) -> np.ndarray:
    """Per row: P(a relevant item outscores a rankable non-relevant one), ties 1/2 (NaN when undefined)."""
    out = np.full(scores.shape[0], np.nan)
    for r in range(scores.shape[0]):
        pos = scores[r, relevant[r] & rankable[r]]
        neg = np.sort(scores[r, rankable[r] & ~relevant[r]])
        if len(pos) == 0 or len(neg) == 0:
            continue
        below = np.searchsorted(neg, pos, side="left")
        tied = np.searchsorted(neg, pos, side="right") - below
        out[r] = (below + 0.5 * tied).mean() / len(neg)
    return out


def mean(values: np.ndarray) -> float:
    """Mean over the rows where the metric is defined (0.0 when none is)."""
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
