"""Every score mixrec computes, over one published ``Snapshot`` (fusion/snapshot.py).

Where a score is computed, in one file:

* known user        ``user_scores``: ``item_repr @ user + item_bias`` (LightFM's prediction, with
                    the item features already applied); ``ann_vectors`` / ``ann_query`` are the same
                    product laid out for an inner-product index ([repr, bias] . [user, 1]);
* fresh feedback    ``fold_in``: a user's vector with the events not trained on yet folded in;
* query user        ``score_query``: the blend of fusion/query.py's components (``query_components``);
* similar items     ``similar_scores``: shared-space and LightFM-representation cosines;
* explanations      ``user_score_terms`` / ``query_score_terms`` (exact terms: they add up to the
                    score), ``fresh_shift``, ``liked_similarity``, ``modality_shares``;
                    fusion/explain.py turns them into explanation dicts;
* interests         ``query_interest`` / ``interest_distribution`` (fusion/interests.py's maths);
* popularity        ``popularity_scores`` (the cold-user fallback).

Picking the best rows is ``mixrec.ranking.top_k`` everywhere. Nothing here mutates a snapshot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from fusion.interests import history_interests, query_interests, top_clusters
from fusion.query import Query, QueryBlend, blend, blend_terms, cooccurrence_scores
from fusion.shared_space import unit_rows
from fusion.snapshot import Snapshot, UnknownItemError
from mixrec.errors import shown_list
from mixrec.events import signed_weight

if TYPE_CHECKING:
    from fusion.codebook import Codebook
    from fusion.shared_space import SharedSpace

MIN_DECAY = 0.01  # an old event still counts a little: weights never reach zero
# How hard a negative event pushes the user vector away from the item's representation, in units
# of the vector's length per unit of event weight (not tuned: MovieLens has no negative events).
NEGATIVE_PUSH = 0.5
# Neighbour weight = overlap ** power: users sharing more of the liked items count more
# (MovieLens validation NDCG@10: 0.477 at power 1, 0.487 at 2, 0.486 at 3).
NEIGHBOUR_POWER = 2
PSEUDO_LIKED = 10  # items nearest to a query vector that stand in for liked items


@dataclass
class Recommendation:
    item_id: str
    score: float
    type: str
    explanation: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredQuery:
    """One query scored over one snapshot (``score_query``)."""

    snapshot: Snapshot
    scores: np.ndarray  # (N,) blended score per item row of ``snapshot``
    parts: dict  # component name -> (N,) scores (what the blend combined)
    liked: np.ndarray  # rows of the query's liked items
    interest: np.ndarray  # (K,) interest distribution of the query
    profile: np.ndarray | None  # unit shared-space taste vector, None without content
    weights: QueryBlend = QueryBlend()  # the blend weights that made ``scores`` from ``parts``


@dataclass(frozen=True)
class FreshEvent:
    """An event the model has not trained on yet (read from the database at request time)."""

    item_id: str
    event: str
    weight: float = 1.0
    timestamp: float = 0.0


@dataclass(frozen=True)
class FoldIn:
    """A user's trained vector combined with their fresh events (``fold_in``).

    ``vector`` is scored like any LightFM user vector (``user_scores``): exact or through the ANN
    indexes. ``base`` is the trained vector (None for a user the model never trained on);
    ``rows`` / ``weights`` / ``ages`` the fresh events the vector folded in (signed, recency-decayed
    weights summed per item; ``ages`` in seconds, of the newest event per item).
    """

    snapshot: Snapshot
    user_id: str
    user_row: int | None
    vector: np.ndarray
    base: np.ndarray | None
    rows: np.ndarray
    weights: np.ndarray
    ages: np.ndarray
    events: tuple[str, ...]  # the newest event type per row
    titles: tuple[str, ...]

    @property
    def personalised(self) -> bool:
        """Whether anything about this user moved the vector (a trained row or a fresh event with weight)."""
        return self.base is not None or bool(np.any(self.weights != 0))


# ====================================================================== known users
def user_scores(snap: Snapshot, vector: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """LightFM scores of a user vector over the snapshot's items (``rows`` only when given): the one
    place ``item_repr @ user + item_bias`` is computed."""
    if rows is None:
        return snap.item_repr @ vector + snap.item_bias
    return snap.item_repr[rows] @ vector + snap.item_bias[rows]


def users_scores(snap: Snapshot, vectors: np.ndarray) -> np.ndarray:
    """(B, N) scores of B user vectors at once (evaluation): ``user_scores`` row by row."""
    return np.asarray(vectors) @ snap.item_repr.T + snap.item_bias[None, :]


def user_score_terms(snap: Snapshot, vector: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The exact terms of ``user_scores`` at ``rows``: ``interaction + bias`` is the score."""
    return {"interaction": snap.item_repr[rows] @ vector, "bias": snap.item_bias[rows]}


def query_score_terms(scored: ScoredQuery, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The exact terms of a query's blended score at ``rows`` (they add up to ``scored.scores[rows]``)."""
    return {n: t[rows] for n, t in blend_terms(scored.parts, scored.weights, scored.snapshot.alive).items()}


def fresh_shift(snap: Snapshot, fold: FoldIn, rows: np.ndarray) -> np.ndarray:
    """How much the fresh events moved each row's score: the term ``item_repr @ (vector - base)``."""
    trained = fold.base if fold.base is not None else np.zeros_like(fold.vector)
    return snap.item_repr[rows] @ (fold.vector - trained)


def ann_vectors(snap: Snapshot) -> np.ndarray:
    """Item vectors for an inner-product index: [repr, bias], so ``ann_vectors . ann_query(u)`` is
    ``user_scores(u)``."""
    return np.hstack([snap.item_repr, snap.item_bias[:, None]]).astype(np.float32, copy=False)


def ann_query(vector: np.ndarray) -> np.ndarray:
    return np.append(vector, np.float32(1.0)).astype(np.float32)


def popularity_prior(snap: Snapshot) -> np.ndarray:
    """log interaction counts: the query blend's popularity component."""
    return np.log1p(snap.counts)


def popularity_scores(snap: Snapshot) -> np.ndarray:
    """Most-interacted first; items nobody touched ordered by the model's prior (bias)."""
    return popularity_prior(snap) + 1e-6 * snap.item_bias


# ====================================================================== fresh feedback
def recency_decay(age, half_life: float | None):
    """``0.5 ** (age / half_life)`` (floored at MIN_DECAY); ``age`` in seconds, ``half_life`` in days;
    1 when ``half_life`` is None (no decay)."""
    if not half_life:
        return 1.0 if np.isscalar(age) else np.ones_like(np.asarray(age, np.float64))
    d = np.maximum(0.5 ** (np.asarray(age, np.float64) / (half_life * 86400.0)), MIN_DECAY)
    return float(d) if np.isscalar(age) else d


def fold_in(snap: Snapshot, user_id: str, fresh: Sequence[FreshEvent], rules: dict, half_life: float | None,
            title: Callable[[str], str], now: float | None = None, prior: float = 1.0) -> FoldIn:
    """The user's vector with ``fresh`` events (not trained on yet) folded in.

    Positive events pull the vector toward the neighbour fold-in of the items (the overlap-
    weighted mean of the vectors of users who liked them: the query path for liked items); the mix
    is ``a = W / (W + prior)`` with ``W`` the fresh positive weight, so ``prior`` is how many fresh
    likes weigh as much as the trained vector (a user with no trained vector is served from the
    fresh events alone). Negative events push the vector away from the disliked items'
    representations, which lowers those items and their close neighbours. Every weight is the
    event rule's signed weight (``rules``) times the recency decay (``half_life`` days, age
    measured from ``now``).
    """
    now = time.time() if now is None else float(now)
    u = snap.user_index.get(user_id)
    base = snap.user_repr[u] if u is not None and snap.user_trained[u] else None
    agg: dict[int, list] = {}  # row -> [signed weight, age of newest, newest event type, newest ts]
    for ev in fresh:
        j = snap.item_index.get(ev.item_id)
        if j is None:
            continue
        age = max(now - float(ev.timestamp), 0.0)
        w = signed_weight(rules, ev.event, ev.weight) * recency_decay(age, half_life)
        cur = agg.get(j)
        if cur is None:
            agg[j] = [w, age, ev.event, float(ev.timestamp)]
        else:
            cur[0] += w
            if float(ev.timestamp) >= cur[3]:
                cur[1:] = [age, ev.event, float(ev.timestamp)]
    rows = np.fromiter(agg, np.int64, len(agg))
    weights = np.array([v[0] for v in agg.values()], np.float64)
    ages = np.array([v[1] for v in agg.values()], np.float64)
    events = tuple(v[2] for v in agg.values())
    titles = tuple(title(snap.item_ids[j]) for j in rows)
    vector = np.zeros(snap.item_repr.shape[1], np.float32) if base is None else np.asarray(base, np.float32)
    pos = weights > 0
    if pos.any():
        pulled = neighbour_vector(snap, rows[pos], weights[pos])
        if pulled is not None:
            total = float(weights[pos].sum())
            a = 1.0 if base is None else total / (total + max(prior, 1e-9))
            vector = (1.0 - a) * vector + a * pulled
    neg = weights < 0
    if neg.any():
        reps = snap.item_repr[rows[neg]]
        units = reps / np.maximum(np.linalg.norm(reps, axis=1, keepdims=True), 1e-12)
        scale = max(float(np.linalg.norm(vector)), float(np.mean(np.linalg.norm(reps, axis=1))), 1e-6)
        vector = vector - NEGATIVE_PUSH * scale * (-weights[neg]) @ units
    return FoldIn(snap, user_id, u, np.asarray(vector, np.float32), base, rows, weights, ages, events, titles)


def neighbour_vector(snap: Snapshot, rows: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """Fold-in through neighbours: the overlap-weighted mean of the LightFM vectors of known users
    who liked items ``rows`` (weights ``weights``); stays in the space LightFM trained users in.
    None when nobody else liked them."""
    # seen @ (weights scattered over their rows): one sparse mat-vec, no column slice of ``seen``
    spread = np.bincount(np.asarray(rows, np.int64), np.asarray(weights, np.float64), snap.seen.shape[1])
    overlap = np.asarray(snap.seen @ spread, np.float64) ** NEIGHBOUR_POWER
    total = overlap.sum()
    if total <= 0:
        return None
    return (overlap @ snap.user_repr / total).astype(np.float32)


# ====================================================================== query users
def liked_rows(snap: Snapshot, ids: Sequence[str]) -> np.ndarray:
    missing = [i for i in ids if i not in snap.item_index]
    if missing:
        raise UnknownItemError(f"unknown liked item ids: {shown_list(missing)}")
    return np.array([snap.item_index[i] for i in ids], np.int64)


def query_interest(snap: Snapshot, codebook: "Codebook", space: "SharedSpace",
                   query: Query) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(interest distribution, shared-space query vector or None, liked item rows)."""
    liked = liked_rows(snap, query.liked_item_ids)
    qvec = space.fuse_query(query.vectors()) if query.vectors() else None
    return query_interests(codebook, snap.item_assign, qvec, liked), qvec, liked


def query_components(snap: Snapshot, codebook: "Codebook", interest: np.ndarray, qvec: np.ndarray | None,
                     liked: np.ndarray, profile: np.ndarray | None) -> dict[str, np.ndarray]:
    """The components fusion/query.py blends, each (N,) over the snapshot's items."""
    seeds = seed_weights(snap, liked, qvec)
    parts: dict[str, np.ndarray] = {"popularity": popularity_prior(snap)}
    top = top_clusters(interest[None, :], codebook.top)
    cols = snap.user_cluster_cols[top.clusters[0]]
    w = top.weights[0] * (cols >= 0)
    if w.sum() > 0:  # only when users carry interest-token features (FeatureWeights.user_interests)
        u = (w[:, None] * snap.user_feature_emb[np.maximum(cols, 0)]).sum(axis=0) / w.sum()
        parts["lightfm"] = user_scores(snap, u)
    if seeds is not None:
        idx, sw = seeds
        # LightFM's standard fold-in: the mean liked representation scored as a user (bias included)
        parts["liked"] = user_scores(snap, sw @ snap.item_repr[idx] / sw.sum())
        u = neighbour_vector(snap, idx, sw)
        if u is not None:
            parts["neighbours"] = user_scores(snap, u)
        parts["cooccurrence"], parts["association"] = cooccurrence_scores(snap.seen, idx, snap.counts, sw)
    if profile is not None:
        # Sharpened cosine (softmax-like, at the codebook temperature): after standardising, a
        # near-exact match stands out from the rest of its category instead of tying with it.
        sims = snap.fused @ profile
        parts["content"] = np.exp((sims - sims.max()) / codebook.temperature)
    return parts


def score_query(snap: Snapshot, codebook: "Codebook", space: "SharedSpace", weights: QueryBlend,
                query: Query) -> ScoredQuery:
    """Score a query once over ``snap``; rank on ``.scores``, explain from the same result."""
    if query.is_empty():
        raise ValueError("empty query: give at least one vector or liked item id")
    interest, qvec, liked = query_interest(snap, codebook, space, query)
    profile = taste_profile(snap, liked, qvec)
    parts = query_components(snap, codebook, interest, qvec, liked, profile)
    used = weights.for_query(len(liked) > 0)
    return ScoredQuery(snap, blend(parts, used, snap.alive), parts, liked, interest, profile, used)


def taste_profile(snap: Snapshot, liked: np.ndarray, qvec: np.ndarray | None) -> np.ndarray | None:
    """Shared-space taste vector: the query vector and the mean of liked items, equally weighted."""
    parts = []
    if qvec is not None:
        parts.append(qvec)
    if len(liked):
        v = snap.fused[liked].mean(axis=0)
        if np.linalg.norm(v) > 0:
            parts.append(v / np.linalg.norm(v))
    if not parts:
        return None
    v = np.mean(parts, axis=0)
    n = np.linalg.norm(v)
    return (v / n).astype(np.float32) if n > 0 else None


def seed_weights(snap: Snapshot, liked: np.ndarray, qvec: np.ndarray | None):
    """(item rows, weights) the collaborative components start from: the liked items (weight 1
    each) plus, for a text/image/audio query, its nearest items in the shared space as
    pseudo-liked items carrying as much total weight as the liked set (at least 1)."""
    idx, w = [np.asarray(liked, np.int64)], [np.ones(len(liked))]
    if qvec is not None:
        sims = snap.fused @ qvec
        sims[liked] = -np.inf
        if snap.alive is not None:  # a deleted item lends no query its weight
            sims[~snap.alive] = -np.inf
        n = min(PSEUDO_LIKED, int(np.isfinite(sims).sum()))
        if n > 0:
            near = np.argpartition(-sims, n - 1)[:n]
            sw = np.exp((sims[near] - sims[near].max()) / 0.05)
            idx.append(near)
            w.append(sw / sw.sum() * max(len(liked), 1))
    idx, w = np.concatenate(idx), np.concatenate(w)
    return (idx, w) if len(idx) else None


# ====================================================================== similar items
def similar_scores(snap: Snapshot, j: int, space: str = "blend") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, shared-space cosine, LightFM-representation cosine) of every item to item row ``j``;
    ``space``: ``shared``, ``lightfm`` or ``blend`` (their mean, or whichever one the item has)."""
    content = snap.fused @ snap.fused[j]
    reps = unit_rows(snap.item_repr)
    collab = reps @ reps[j]
    has_content = np.linalg.norm(snap.fused[j]) > 0
    if space == "shared" or (space == "blend" and np.linalg.norm(reps[j]) == 0):
        scores = content
    elif space == "lightfm" or not has_content:
        scores = collab
    else:
        scores = 0.5 * (content + collab)
    return scores, content, collab


# ====================================================================== explanation numbers
def liked_similarity(snap: Snapshot, item: int, liked: np.ndarray) -> np.ndarray:
    """Similarity of item row ``item`` to each of ``liked``: the mean of shared-space and
    LightFM-representation cosines."""
    content = snap.fused[liked] @ snap.fused[item]
    reps = snap.item_repr[liked]
    norms = np.linalg.norm(reps, axis=1) * max(float(np.linalg.norm(snap.item_repr[item])), 1e-12)
    collab = (reps @ snap.item_repr[item]) / np.maximum(norms, 1e-12)
    return 0.5 * (content + collab)


def modality_shares(snap: Snapshot, space: "SharedSpace", item: int,
                    profile: np.ndarray | None) -> dict[str, float]:
    """Per present modality of ``item``: its fusion weight times its projection's closeness to the
    profile (the fusion weight alone without a profile); raw, not normalised."""
    present = [m for m in snap.per_modality if snap.masks[m][item]]
    if profile is None:  # nothing to compare against: fall back to the fusion weights
        return {m: space.weight(m) for m in present}
    return {m: space.weight(m) * max(float(snap.per_modality[m][item] @ profile), 0.0) for m in present}


# ====================================================================== interests
def interest_distribution(snap: Snapshot, codebook: "Codebook", space: "SharedSpace",
                          who: "str | Query | ScoredQuery") -> np.ndarray:
    """(K,) interest distribution: a known user's (from history), a query's, or a scored query's."""
    if isinstance(who, ScoredQuery):
        return who.interest
    if isinstance(who, Query):
        return query_interest(snap, codebook, space, who)[0]
    return snap.user_interest[snap.user_row(who)]


def liked_interest(snap: Snapshot, codebook: "Codebook", liked: np.ndarray) -> np.ndarray:
    """(K,) interest distribution of a set of liked item rows (each counted once)."""
    one_row = sp.csr_matrix((np.ones(len(liked)), (np.zeros(len(liked), np.int64), liked)),
                            shape=(1, len(snap.item_ids)))
    return history_interests(one_row, snap.item_assign, codebook.size)[0]
