"""Scoring for users with no history: a query (native-space vectors and/or liked items).

A query user is scored by a blend of standardised components, each one a
different view of "what this person likes":

* ``lightfm``      LightFM with the query's interest-cluster tokens as user features
                   (the hybrid model's own cold-user path),
* ``liked``        the mean LightFM representation of the liked items, scored as a user
                   (LightFM's standard fold-in, item biases included),
* ``neighbours``   fold-in: the mean LightFM vector of known users who liked the same items,
* ``cooccurrence`` item-item cosine over the interaction matrix from the liked items,
* ``association``  sum of P(item | liked item) over the liked items (user-kNN-like),
* ``content``      sharpened cosine to the query's shared-space profile (text/image/audio + liked items),
* ``popularity``   log interaction counts: a prior that is very strong on real data.

Each component is standardised over the catalog so the blend weights are
comparable; ``calibrate_blend`` picks the weights by NDCG@k on validation
users carved from training users (never the test set).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Sequence

import numpy as np
import scipy.sparse as sp

COMPONENTS = ("lightfm", "liked", "neighbours", "cooccurrence", "association", "content", "popularity")


@dataclass(frozen=True)
class Query:
    """NATIVE-space vectors from the encoders (any subset) and/or ids of items the user liked."""

    text_vec: np.ndarray | None = None
    image_vec: np.ndarray | None = None
    audio_vec: np.ndarray | None = None
    liked_item_ids: tuple[str, ...] = ()

    def vectors(self) -> dict[str, np.ndarray]:
        out = {}
        for m in ("text", "image", "audio"):
            v = getattr(self, f"{m}_vec")
            if v is not None:
                out[m] = np.asarray(v, np.float32).reshape(-1)
        return out

    def is_empty(self) -> bool:
        return not self.vectors() and not self.liked_item_ids


@dataclass(frozen=True)
class QueryBlend:
    """Weights of the standardised components.

    Defaults chosen on MovieLens validation users carved from training users (earliest 5
    items known + their text): the neighbour fold-in alone reached NDCG@10 0.486 there
    (popularity 0.433), with content at 0.02 0.487 (0.05: 0.485, 0.1: 0.471); calibrated
    mixtures scored up to 0.489 on validation but did worse on held-out users (overfitting
    188 users), so the default stays nearly pure. ``calibrate_blend`` re-tunes for another
    catalogue.
    """

    lightfm: float = 0.0
    liked: float = 0.0
    neighbours: float = 1.0
    cooccurrence: float = 0.0
    association: float = 0.0
    content: float = 0.02
    popularity: float = 0.0
    # A pure description (vectors, no liked items) says what the person wants in so many words:
    # there the content similarity leads, so a matching brand-new item can surface.
    content_description: float = 2.0

    def for_query(self, has_liked: bool) -> "QueryBlend":
        return self if has_liked else replace(self, content=self.content_description)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QueryBlend":
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in d.items() if k in names})


def standardise(s: np.ndarray, live: np.ndarray | None = None) -> np.ndarray:
    """z-scores over the last axis; mean and spread taken over the ``live`` rows only (deleted items
    not yet compacted away must not move the live items' scores)."""
    s = np.asarray(s, np.float64)
    ref = s if live is None else s[..., live]
    sd = ref.std(axis=-1, keepdims=True)
    return np.where(sd > 0, (s - ref.mean(axis=-1, keepdims=True)) / np.where(sd > 0, sd, 1.0), 0.0)


def cooccurrence_scores(seen: sp.csr_matrix, seeds: np.ndarray, counts: np.ndarray,
                        weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Item-item scores from seed items l (weights w_l), over the binary interaction matrix:

    * cosine:      sum_l w_l co(j, l) / sqrt(n_j n_l)  (similar items, popularity-neutral)
    * association: sum_l w_l co(j, l) / n_l = sum_l w_l P(j | l)  (what fans of l also took;
      popularity-aware, user-kNN with overlap similarity up to a per-seed weight)
    """
    n = seen.shape[1]
    if len(seeds) == 0 or seen.shape[0] == 0:
        return np.zeros(n), np.zeros(n)
    seeds = np.asarray(seeds, np.int64)
    w = np.ones(len(seeds)) if weights is None else np.asarray(weights, np.float64)
    n_l = np.maximum(np.asarray(counts, np.float64)[seeds], 1.0)
    # sum_l co(j, l) v_l = (seen.T @ (seen @ v))_j with v scattered over the seeds' columns: four
    # sparse mat-vecs, O(interactions), instead of slicing the seeds' columns and an (N, L) product.
    per_user = seen @ np.stack([np.bincount(seeds, w / np.sqrt(n_l), n), np.bincount(seeds, w / n_l, n)], axis=1)
    both = np.asarray(seen.T @ per_user, np.float64)
    return both[:, 0] / np.sqrt(np.maximum(np.asarray(counts, np.float64), 1.0)), both[:, 1]


def blend_terms(components: dict[str, np.ndarray], weights: QueryBlend,
                live: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The exact terms ``blend`` adds up: each weighted component, standardised over the catalog;
    with no weighted component present (e.g. liked items nobody else has touched, without
    content) the one term is the standardised popularity prior."""
    terms = {}
    for name, s in components.items():
        w = getattr(weights, name)
        if w != 0:
            terms[name] = w * standardise(s, live)
    return terms or {"popularity": standardise(components["popularity"], live)}


def blend(components: dict[str, np.ndarray], weights: QueryBlend, live: np.ndarray | None = None) -> np.ndarray:
    """Weighted sum of standardised components (the sum of ``blend_terms``)."""
    terms = iter(blend_terms(components, weights, live).values())
    total = next(terms)
    for part in terms:
        total = total + part
    return total


def calibrate_blend(components: Sequence[dict[str, np.ndarray]], targets: Sequence[np.ndarray],
                    excludes: Sequence[np.ndarray], k: int = 10, starts: Sequence[QueryBlend] | None = None,
                    grid: Sequence[float] = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
                    rounds: int = 3) -> tuple[QueryBlend, float]:
    """Coordinate ascent on the blend weights by mean NDCG@k over validation queries.

    Several starts (the defaults, popularity alone, each component alone) because the
    objective is flat and bumpy: a single start stalls in the nearest local optimum.
    Every trial scores all queries at once (one (queries x components x items) stack), so a
    training-time calibration (fusion/calibration.py) can afford it.
    """
    from fusion import validation  # the metric calibration shares; imported here to keep this module light

    names = sorted({n for c in components for n in c})
    if not components or not names:
        return QueryBlend(), 0.0
    n_items = len(next(iter(components[0].values())))
    stack = np.zeros((len(components), len(names), n_items), np.float32)
    for r, c in enumerate(components):
        for j, n in enumerate(names):
            if n in c:
                stack[r, j] = standardise(c[n])
    relevant = validation.target_mask(targets, n_items)
    rankable = validation.rankable_mask(len(components), n_items, excludes, None)

    def score(w: dict[str, float]) -> float:
        total = np.einsum("ucn,c->un", stack, np.array([w.get(n, 0.0) for n in names], np.float32))
        return float(np.nan_to_num(validation.ndcg_at_k(total, relevant, rankable, k)).mean())

    zero = {n: 0.0 for n in QueryBlend().as_dict()}
    if starts is None:
        starts = [QueryBlend()] + [QueryBlend.from_dict({**zero, n: 1.0}) for n in names]
    best_w, best = None, -1.0
    for start in starts:
        w = start.as_dict()
        val = score(w)
        for _ in range(rounds):
            improved = False
            for n in names:
                for g in grid:
                    if g == w[n]:
                        continue
                    trial = {**w, n: g}
                    if not any(trial[c] for c in names):
                        continue
                    t = score(trial)
                    if t > val + 1e-6:
                        val, w, improved = t, trial, True
            if not improved:
                break
        if val > best:
            best_w, best = w, val
    return QueryBlend.from_dict(best_w), best
