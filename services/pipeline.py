"""RankingPipeline: from a scored user or query to the response list, the same for the service and the CLI.

Scoring path: narrow the catalog to the candidates ``rank`` can pick from (per type in play, its
``pool`` best allowed items — exactly, or through the ANN indexes at ``serving.ann_threshold``
items and above), re-score them exactly (fusion/scoring.py), and rank a table of candidates only
(mixrec/ranking.py: mix, diversity). Filters (types, tags) and exclusions (the caller's ids, the
user's seen items, items the caller's database says to leave out) apply before ranking.
Explanations are computed for the chosen rows only.

No database and no HTTP here: the Recommender's request layer (services/engine.py) passes what its
database says to exclude; ``mixrec recommend`` passes nothing (or its own), and both rank alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from fusion.scoring import FoldIn, ScoredQuery, ann_query, popularity_scores, user_scores
from fusion.snapshot import Snapshot
from mixrec.errors import InputError, shown
from mixrec.ranking import ItemTable, parse_mix, rank
from services.candidates import AnnCandidates, SnapshotMeta, exact_candidates
from services.schemas import RankingOptions

if TYPE_CHECKING:
    from fusion.hybrid import HybridModel

POOL_FACTOR = 5  # mixrec.ranking.rank's default pool_factor: MMR looks at k * 5 (at least 50) per type


# The ranking options are the API's (services/schemas.py): one definition for HTTP, engine and CLI.
Options = RankingOptions


class RankingPipeline:
    """Ranks over the published snapshot of ``model_of()`` (read at each call: a swapped model is used at once)."""

    def __init__(self, model_of: Callable[[], "HybridModel"], ann: AnnCandidates) -> None:
        self.model_of = model_of
        self.ann = ann
        self._snap_meta: SnapshotMeta | None = None

    # ================================================================ requests
    def for_user(self, fold: FoldIn, opts: Options, stored_exclusions: Iterable[str] = (),
                 exclude_seen: bool = True) -> list[dict]:
        """Top-k for a folded-in user (``HybridModel.fold_in``): exact or ANN candidates, then ``rank``."""
        snap = fold.snapshot
        meta = self.meta(snap)
        types, pool = self.plan(opts, meta)
        exclude = self.exclude_rows(snap, fold.user_row if exclude_seen else None,
                                    list(opts.exclude_item_ids) + list(stored_exclusions))
        allowed = self.allowed(snap, meta, opts, exclude)
        cand = self._ann_candidates(snap, meta, fold.vector, allowed, types, pool, len(exclude), bool(opts.tags))
        if cand is None:
            scores = user_scores(snap, fold.vector)
            cand = exact_candidates(scores, meta, allowed, types, pool)
            cand_scores = scores[cand]
        else:
            cand_scores = user_scores(snap, fold.vector, cand)
        rows, sc = self.rank(snap, meta, cand, cand_scores, opts)
        expl = self.model_of().explain_rows(fold, rows, sc) if opts.explain and len(rows) else None
        return self.respond(meta, rows, sc, expl)

    def popular(self, snap: Snapshot, opts: Options, stored_exclusions: Iterable[str] = ()) -> list[dict]:
        """Most-interacted items, for a user nobody knows anything about (``cold: true``)."""
        meta = self.meta(snap)
        types, pool = self.plan(opts, meta)
        allowed = self.allowed(snap, meta, opts, self.exclude_rows(snap, None, list(opts.exclude_item_ids) +
                                                             list(stored_exclusions)))
        scores = popularity_scores(snap)
        cand = exact_candidates(scores, meta, allowed, types, pool)
        rows, sc = self.rank(snap, meta, cand, scores[cand], opts)
        expl = [{"popularity": int(snap.counts[r])} for r in rows] if opts.explain else None
        return self.respond(meta, rows, sc, expl)

    def for_query(self, scored: ScoredQuery, opts: Options) -> list[dict]:
        """Top-k for a scored query (``HybridModel.score_query``); its liked items are never returned."""
        snap, scores = scored.snapshot, scored.scores
        meta = self.meta(snap)
        types, pool = self.plan(opts, meta)
        liked = [snap.item_ids[j] for j in scored.liked]
        allowed = self.allowed(snap, meta, opts, self.exclude_rows(snap, None, liked + list(opts.exclude_item_ids)))
        cand = exact_candidates(scores, meta, allowed, types, pool)
        rows, sc = self.rank(snap, meta, cand, scores[cand], opts)
        expl = self.model_of().explain_rows(scored, rows) if opts.explain and len(rows) else None
        return self.respond(meta, rows, sc, expl)

    # ================================================================ steps
    @staticmethod
    def plan(opts: Options, meta: SnapshotMeta) -> tuple[list[int], int]:
        """(type codes in play, candidates each needs); validates types and mix against the catalogue's types."""
        spec = parse_mix(opts.mix, opts.k, opts.types, known=meta.type_names)
        if not 0.0 <= opts.diversity <= 1.0:
            raise InputError(f"diversity must be in [0, 1], got {shown(opts.diversity)}")
        pool = opts.k if opts.diversity == 0 else max(opts.k * POOL_FACTOR, 50)
        return [meta.type_names.index(t) for t in spec.types], pool

    def meta(self, snap: Snapshot) -> SnapshotMeta:
        """Row-aligned item metadata for ``snap``; rebuilt only when its item ids change (extended when rows were appended)."""
        meta = self._snap_meta
        if meta is None or not (meta.ids is snap.item_ids or meta.ids == snap.item_ids):
            meta = self._snap_meta = SnapshotMeta.build(snap, previous=meta)
        return meta

    @staticmethod
    def allowed(snap: Snapshot, meta: SnapshotMeta, opts: Options, exclude_rows: np.ndarray) -> np.ndarray:
        """Rows a response may hold: the tags filter, minus ``exclude_rows`` and deleted items' rows
        (``snap.alive``: the metadata is shared by snapshots that differ only in tombstones)."""
        allowed = meta.tag_mask(opts.tags) if opts.tags else np.ones(len(meta.ids), bool)
        allowed[exclude_rows] = False
        if snap.alive is not None:
            allowed &= snap.alive
        return allowed

    @staticmethod
    def exclude_rows(snap: Snapshot, seen_of: int | None, item_ids: Iterable[str]) -> np.ndarray:
        """Rows never to return: ``item_ids`` and the seen items of user row ``seen_of`` (when given)."""
        index = snap.item_index
        out = np.asarray([index[i] for i in item_ids if i in index], np.int64)
        if seen_of is not None:
            out = np.concatenate([out, snap.seen_rows(seen_of)])
        return out

    def rank(self, snap: Snapshot, meta: SnapshotMeta, cand: np.ndarray, scores: np.ndarray,
             opts: Options) -> tuple[np.ndarray, np.ndarray]:
        """``rank`` over candidate rows (filters already applied); returns catalog rows and scores."""
        cand, first = np.unique(cand, return_index=True)
        scores = scores[first]
        table = ItemTable([meta.ids[r] for r in cand], [meta.type_names[c] for c in meta.type_codes[cand]],
                          known=meta.type_names)
        vectors = _diversity_vectors(snap, cand) if opts.diversity > 0 else None
        r = rank(scores, table, opts.k, types=opts.types, mix=opts.mix, diversity=opts.diversity, vectors=vectors)
        return cand[r.indices], r.scores

    @staticmethod
    def respond(meta: SnapshotMeta, rows: np.ndarray, scores: np.ndarray,
                explanations: list[dict] | None) -> list[dict]:
        out = []
        for n, (r, s) in enumerate(zip(rows, scores)):
            it = meta.items[int(r)]
            entry = {"item_id": it.item_id, "type": it.type, "title": it.title, "score": round(float(s), 6)}
            if explanations is not None:
                entry["explanation"] = explanations[n]
            out.append(entry)
        return out

    def _ann_candidates(self, snap: Snapshot, meta: SnapshotMeta, user: np.ndarray, allowed: np.ndarray,
                        types: list[int], pool: int, n_excluded: int, tags_filtered: bool) -> np.ndarray | None:
        """Candidate rows from the ANN indexes plus items added since they were built; None: go exact."""
        if not self.ann.active_for(snap):
            return None
        self.ann.refresh(snap)  # background; this request uses the indexes there are
        view = self.ann.view(snap)
        if view is None:
            return None
        cand = self.ann.candidates(view, ann_query(user), allowed, types, pool, n_excluded, tags_filtered)
        fresh = view.fresh
        if fresh.size:
            fresh = fresh[allowed[fresh] & np.isin(meta.type_codes[fresh], types)]
            cand = np.concatenate([cand, fresh])
        return cand


def _diversity_vectors(snap: Snapshot, cand: np.ndarray) -> np.ndarray:
    """Shared-space vectors of ``cand`` for MMR; items with no content fall back to their collaborative vectors."""
    vectors = snap.fused[cand]
    empty = np.linalg.norm(vectors, axis=1) == 0
    if empty.any():
        collab = snap.item_repr[cand]
        vectors = vectors.copy()
        if collab.shape[1] >= vectors.shape[1]:
            unit = collab / np.maximum(np.linalg.norm(collab, axis=1, keepdims=True), 1e-12)
            vectors[empty] = unit[empty][:, :vectors.shape[1]]
        else:
            vectors[empty] = 0.0
    return vectors
