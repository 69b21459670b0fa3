"""``SnapshotReader``: HybridModel's read API (the Python library's recommend / score / explain calls).

Every method takes the published ``Snapshot`` once and hands it to fusion/scoring.py (the
numbers) and fusion/explain.py (the explanations): no arithmetic here. The writer
(fusion/hybrid.py) mixes this in and provides ``_snap`` (the published snapshot), ``codebook``,
``space``, ``blend_weights``, ``event_rules``, ``recency_half_life_days`` and ``item_title``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fusion import explain, scoring
from fusion.interests import labelled
from fusion.query import Query
from fusion.scoring import FoldIn, FreshEvent, Recommendation, ScoredQuery
from fusion.snapshot import Snapshot
from mixrec.ranking import top_k


class SnapshotReader:
    _snap: Snapshot

    @property
    def snapshot(self) -> Snapshot:
        """The published read model (immutable; hold it to read one consistent model)."""
        return self._snap

    def item_ids(self) -> list[str]:
        """The id of each row of ``score_all``, deleted (tombstoned) rows included: ``item_index``
        holds the live ones."""
        return list(self._snap.item_ids)

    def item_index(self) -> dict[str, int]:
        """Item id -> row of ``score_all`` (the published snapshot's; do not mutate)."""
        return self._snap.item_index

    def known_users(self) -> list[str]:
        return list(self._snap.user_ids)

    def item_vectors(self, space: str = "lightfm") -> tuple[list[str], np.ndarray]:
        """Item vectors for ANN: ``lightfm`` -> [repr, bias] so a dot with [user, 1] is the score;
        ``shared`` -> unit shared-space vectors."""
        snap = self._snap
        if space == "shared":
            return list(snap.item_ids), snap.fused.copy()
        return list(snap.item_ids), scoring.ann_vectors(snap)

    def score_all(self, who: str | Query) -> np.ndarray:
        """Scores over ``item_ids()`` (higher is better) for a known user id or a query."""
        snap = self._snap
        if isinstance(who, Query):
            return self._score_query(snap, who).scores
        return scoring.user_scores(snap, snap.user_repr[snap.user_row(who)])

    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True,
                  candidates: np.ndarray | None = None) -> list[Recommendation]:
        """Plain top-k by the user's LightFM score (no mix or filters: services' RankingPipeline has those)."""
        snap = self._snap
        u = snap.user_row(user_id)
        scores = scoring.user_scores(snap, snap.user_repr[u])
        top = _pick(scores, k, snap.seen_rows(u) if exclude_seen else (), candidates, snap.alive)
        expl = explain.explain_user(snap, self.codebook, self.space, u, top, scores[top])
        return _recommendations(snap, top, scores[top], expl)

    def recommend_for_query(self, query: Query, k: int = 10, exclude_liked: bool = True,
                            candidates: np.ndarray | None = None) -> list[Recommendation]:
        scored = self.score_query(query)
        top = _pick(scored.scores, k, scored.liked if exclude_liked else (), candidates, scored.snapshot.alive)
        expl = explain.explain_query(scored, self.codebook, self.space, top)
        return _recommendations(scored.snapshot, top, scored.scores[top], expl)

    def score_query(self, query: Query) -> ScoredQuery:
        """Score a query once over the current snapshot; rank on ``.scores`` and pass the result to
        ``explain_rows`` to explain the chosen rows without scoring again."""
        return self._score_query(self._snap, query)

    def _score_query(self, snap: Snapshot, query: Query) -> ScoredQuery:
        return scoring.score_query(snap, self.codebook, self.space, self.blend_weights, query)

    def query_components(self, query: Query) -> dict[str, np.ndarray]:
        return self.score_query(query).parts

    def explain_rows(self, who: "str | Query | ScoredQuery | FoldIn", rows: np.ndarray,
                     scores: np.ndarray | None = None, *, snapshot: Snapshot | None = None) -> list[dict]:
        """Explanation dicts (as in ``recommend``) for item ``rows`` of ``snapshot`` (default: the current one).

        ``who`` is a known user id, a query (scored here), a ``score_query`` result (not scored
        again; its snapshot is used) or a ``fold_in`` result. ``scores``: the user's scores at
        ``rows`` when already computed (query explanations carry every score component)."""
        rows = np.asarray(rows, np.int64)
        if isinstance(who, Query):
            who = self.score_query(who)
        if isinstance(who, ScoredQuery):
            return explain.explain_query(who, self.codebook, self.space, rows)
        if isinstance(who, FoldIn):
            return explain.explain_fold_in(who, self.codebook, self.space, rows, scores)
        snap = snapshot or self._snap
        return explain.explain_user(snap, self.codebook, self.space, snap.user_row(who), rows, scores)

    def fold_in(self, user_id: str, fresh: Sequence[FreshEvent], now: float | None = None,
                prior: float = 1.0) -> FoldIn:
        """The user's vector with ``fresh`` events folded in, over the current snapshot (``scoring.fold_in``)."""
        return scoring.fold_in(self._snap, user_id, fresh, self.event_rules, self.recency_half_life_days,
                               self.item_title, now=now, prior=prior)

    def similar_items(self, item_id: str, k: int = 10, types: Sequence[str] | None = None,
                      space: str = "blend") -> list[Recommendation]:
        """Nearest items by shared-space cosine, LightFM-representation cosine, or their mean (``blend``)."""
        snap = self._snap
        j = snap.item_row(item_id)
        scores, content, collab = scoring.similar_scores(snap, j, space)
        cand = np.flatnonzero(np.isin(snap.item_types, list(types))) if types else None
        top = _pick(scores, k, [j], cand, snap.alive)
        return [Recommendation(snap.item_ids[i], float(scores[i]), str(snap.item_types[i]),
                               {"similar_to": item_id, "content_similarity": float(content[i]),
                                "collaborative_similarity": float(collab[i])})
                for i in top]

    def user_interests(self, who: "str | Query | ScoredQuery", top: int | None = None) -> list[tuple[int, str, float]]:
        """(cluster id, label, probability) sorted by probability, from history or from a query."""
        dist = scoring.interest_distribution(self._snap, self.codebook, self.space, who)
        return labelled(dist, self.codebook.labels, top)


def _pick(scores: np.ndarray, k: int, exclude, candidates: np.ndarray | None,
          alive: np.ndarray | None = None) -> np.ndarray:
    """``top_k`` over ``candidates`` (default every row) minus ``exclude`` and dead rows (``alive`` False)."""
    rows = np.arange(len(scores)) if candidates is None else np.unique(np.asarray(candidates, np.int64))
    if alive is not None:
        rows = rows[alive[rows]]
    exclude = np.asarray(exclude, np.int64)
    if exclude.size:
        rows = rows[~np.isin(rows, exclude)]
    return top_k(scores, k, rows)


def _recommendations(snap: Snapshot, rows: np.ndarray, scores: np.ndarray,
                     explanations: list[dict]) -> list[Recommendation]:
    return [Recommendation(snap.item_ids[j], float(s), str(snap.item_types[j]), e)
            for j, s, e in zip(rows, scores, explanations)]
