"""CandidateIndex: top-k inner-product search over item vectors, exact or HNSW by catalog size.

Below ``ann_threshold`` live items, search is exact (numpy/BLAS over the stored vectors).
At or above it, a faiss ``IndexHNSWFlat`` (inner-product metric) answers, with the
caller's filter applied inside the graph walk through an ``IDSelectorBitmap``, so
filtered results are still k items whenever k pass the filter. When the filter is
so tight that few items pass (``exact_below`` or fewer), the query runs exactly over
the items that pass: small filtered sets stay exact.

An honest ANN path: when a filtered graph walk comes back with fewer than k results (a tight
filter starves the beam), it is retried with a wider beam (``efSearch`` x4 each time, up to
``ef_max``). An unfiltered short walk has visited everything reachable from where the greedy
descent landed (a small island of the directed inner-product graph; at 1M items ~8% of per-type
walks end in one) and widening would walk it again: it is walked again at once from other entry
points, the ``REENTRY_POINTS`` of a fixed sample of ``PIVOTS`` nodes that score best for the query
(~0.2 ms where an exact scan of the type costs ~6 ms), as is a filtered walk still short at
``ef_max``; the two walks' results are merged. Only what is still short runs exactly.
``SearchCounters`` counts searches, widenings, re-entries and the exact fallbacks that remain,
so the tail is visible, not silent.

One copy of the vectors: the faiss index's own storage (an ``IndexFlatIP`` while exact,
the HNSW's flat storage once it exists), read in place for exact scans. Id maps are
numpy arrays (position -> id, id -> position), not dicts.

Ids are the caller's non-negative integers (the Recommender's item rows), and
``allowed_mask`` is a boolean array indexed by those ids. HNSW cannot delete, so
removals are tombstones filtered at search time; the index compacts and rebuilds
once tombstones pass ``rebuild_fraction`` of it. One lock serialises mutation and
search: HNSW must not be searched while it grows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import faiss
import numpy as np

PIVOTS = 1024  # nodes sampled per HNSW index as candidate entry points for a walk that came back short
REENTRY_POINTS = 32  # of those, the ones scoring best for the query start the walk again (at 1M, 8 left 32
# of 171 dead ends short, 32 none: bench/ann_reentry.py)


@dataclass
class SearchCounters:
    """How the HNSW searches of one owner went (shared by its per-type indexes; read by the metrics)."""

    searches: int = 0  # HNSW searches asked for (first tries)
    reentries: int = 0  # short walks walked again from the pivots nearest the query
    widenings: int = 0  # retries with a wider beam after a short answer
    exact_fallbacks: int = 0  # searches still short at ``ef_max``, answered by an exact scan
    exact_small: int = 0  # searches whose filter let ``exact_below`` or fewer items through (exact by design)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict:
        with self._lock:
            return {"searches": self.searches, "reentries": self.reentries, "widenings": self.widenings,
                    "exact_fallbacks": self.exact_fallbacks, "exact_small": self.exact_small}


class CandidateIndex:
    def __init__(self, dim: int, ann_threshold: int = 50_000, *, hnsw_m: int = 32, ef_construction: int = 100,
                 ef_search: int = 128, ef_max: int = 2048, exact_below: int = 2048, rebuild_fraction: float = 0.2,
                 counters: SearchCounters | None = None):
        if dim < 1 or ann_threshold < 1 or hnsw_m < 2 or ef_search < 1 or ef_max < ef_search:
            raise ValueError("dim, ann_threshold, ef_search must be >= 1, hnsw_m >= 2 and ef_max >= ef_search")
        self.dim, self.ann_threshold = int(dim), int(ann_threshold)
        self.hnsw_m, self.ef_construction, self.ef_search, self.ef_max = hnsw_m, ef_construction, ef_search, ef_max
        self.exact_below, self.rebuild_fraction = exact_below, rebuild_fraction
        self.counters = counters or SearchCounters()
        self._lock = threading.RLock()
        self._index: faiss.Index = faiss.IndexFlatIP(self.dim)  # positions 0.._size; the only copy of the vectors
        self._ids = np.zeros(0, dtype=np.int64)  # position -> id; capacity grows by doubling
        self._alive = np.zeros(0, dtype=bool)  # position -> not tombstoned
        self._where = np.zeros(0, dtype=np.int64)  # id -> position, -1 when absent
        self._size = 0  # positions in use (alive or tombstoned)
        self._live = 0
        self._pivots: tuple[faiss.Index, np.ndarray, np.ndarray] | None = None  # (index, positions, vectors)

    # ------------------------------------------------------------------ state

    def __len__(self) -> int:
        return self._live

    @property
    def uses_ann(self) -> bool:
        return isinstance(self._index, faiss.IndexHNSW)

    def __contains__(self, item_id: int) -> bool:
        i = int(item_id)
        return 0 <= i < self._where.size and self._where[i] >= 0

    def describe(self) -> dict:
        return {"items": len(self), "mode": "hnsw" if self.uses_ann else "exact", "dim": self.dim,
                "ann_threshold": self.ann_threshold, "tombstones": self._size - len(self)}

    def nbytes(self) -> int:
        """Bytes held: the faiss index (vectors + graph) and the id maps."""
        vectors = self._size * self.dim * 4
        graph = 0
        if self.uses_ann:
            graph = faiss.downcast_index(self._index).hnsw.neighbors.size() * 4
        return vectors + graph + self._ids.nbytes + self._alive.nbytes + self._where.nbytes

    def ids(self) -> np.ndarray:
        """Live ids in position order (a copy)."""
        with self._lock:
            return self._ids[:self._size][self._alive[:self._size]].copy()

    def vectors(self) -> np.ndarray:
        """Live vectors in position order, matching ``ids()`` (a copy)."""
        with self._lock:
            return self._stored()[self._alive[:self._size]].copy()

    def vectors_at(self, start: int, stop: int) -> np.ndarray:
        """``vectors()[start:stop]`` without copying the others (a copy of those rows only)."""
        with self._lock:
            live = np.flatnonzero(self._alive[:self._size])[start:stop]
            return self._stored()[live].copy()

    def _stored(self) -> np.ndarray:
        """The faiss storage as an (n, dim) array, in place (valid until the index next changes: hold the lock)."""
        index = faiss.downcast_index(self._index.storage) if self.uses_ann else self._index
        n = index.ntotal
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        return faiss.rev_swig_ptr(index.get_xb(), n * self.dim).reshape(n, self.dim)

    # ------------------------------------------------------------------ persistence (mixrec/ann_store.py)

    def faiss_index(self) -> faiss.Index:
        """The faiss index itself (for ``faiss.write_index``); positions map to ``position_ids()``."""
        return self._index

    def position_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(id, alive) per position, copies."""
        with self._lock:
            return self._ids[:self._size].copy(), self._alive[:self._size].copy()

    def restore(self, index: faiss.Index, ids: np.ndarray, alive: np.ndarray) -> "CandidateIndex":
        """Adopt a faiss index read back from disk, with its positions' ids and tombstones."""
        ids, alive = np.asarray(ids, np.int64), np.asarray(alive, bool)
        if index.d != self.dim or index.ntotal != ids.size or alive.size != ids.size:
            raise ValueError(f"index of {index.ntotal} x {index.d} does not match {ids.size} ids of dim {self.dim}")
        if ids.size and (ids.min() < 0 or np.unique(ids[alive]).size != int(alive.sum())):
            raise ValueError("ids must be >= 0 and unique among live positions")
        with self._lock:
            self._index = index
            self._ids, self._alive, self._size = ids.copy(), alive.copy(), ids.size
            self._where = np.full(int(ids.max()) + 1 if ids.size else 0, -1, np.int64)
            self._where[ids[alive]] = np.flatnonzero(alive)
            self._live = int(alive.sum())
        return self

    # ------------------------------------------------------------------ mutation

    def add(self, ids, vectors) -> None:
        """Add items; an id already present gets the new vector."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), -1) if len(ids) else \
            np.zeros((0, self.dim), dtype=np.float32)
        if vectors.shape != (ids.size, self.dim):
            raise ValueError(f"vectors must have shape ({ids.size}, {self.dim}), got {vectors.shape}")
        if ids.size and ids.min() < 0:
            raise ValueError("ids must be >= 0")
        if np.unique(ids).size != ids.size:
            raise ValueError("ids must be unique within one add() call")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite")
        with self._lock:
            self._tombstone(ids)
            start = self._size
            self._reserve(start + ids.size, int(ids.max()) + 1 if ids.size else 0)
            self._ids[start:start + ids.size] = ids
            self._alive[start:start + ids.size] = True
            self._where[ids] = np.arange(start, start + ids.size)
            self._index.add(vectors)
            self._size += ids.size
            self._live += ids.size
            self._maintain()

    def remove(self, ids) -> int:
        """Remove items by id; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            n = self._tombstone(np.asarray(ids, dtype=np.int64).reshape(-1))
            self._maintain()
            return n

    def _tombstone(self, ids: np.ndarray) -> int:
        ids = ids[(ids >= 0) & (ids < self._where.size)]
        pos = self._where[ids]
        pos = np.unique(pos[pos >= 0])
        self._alive[pos] = False
        self._where[self._ids[pos]] = -1
        self._live -= pos.size
        return int(pos.size)

    def _reserve(self, needed: int, id_bound: int) -> None:
        cap = self._ids.shape[0]
        if needed > cap:
            new_cap = max(needed, 2 * cap, 64)
            for name in ("_ids", "_alive"):
                old = getattr(self, name)
                grown = np.zeros(new_cap, dtype=old.dtype)
                grown[:self._size] = old[:self._size]
                setattr(self, name, grown)
        if id_bound > self._where.size:
            grown = np.full(max(id_bound, 2 * self._where.size, 64), -1, np.int64)
            grown[:self._where.size] = self._where
            self._where = grown

    def _maintain(self) -> None:
        live, dead = len(self), self._size - len(self)
        if dead and dead > self.rebuild_fraction * max(self._size, 1):
            self._compact()
        if live >= self.ann_threshold and not self.uses_ann:
            self._index = self._hnsw_over(self._stored())
        elif live < self.ann_threshold and self.uses_ann:
            self._index = self._flat_over(self._stored())  # exact is both cheaper and exact at this size

    def _compact(self) -> None:
        keep = np.flatnonzero(self._alive[:self._size])
        vectors = np.ascontiguousarray(self._stored()[keep])
        self._index = self._hnsw_over(vectors) if self.uses_ann else self._flat_over(vectors)
        self._ids, self._alive = self._ids[keep], np.ones(keep.size, dtype=bool)
        self._size = keep.size
        self._where[:] = -1
        self._where[self._ids] = np.arange(keep.size)

    def _flat_over(self, vectors: np.ndarray) -> faiss.Index:
        index = faiss.IndexFlatIP(self.dim)
        index.add(np.ascontiguousarray(vectors))
        return index

    def _hnsw_over(self, vectors: np.ndarray) -> faiss.Index:
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.add(np.ascontiguousarray(vectors))
        return index

    # ------------------------------------------------------------------ search

    def search(self, query, k: int, allowed_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best (ids, inner-product scores), best first, among items where ``allowed_mask[id]``."""
        q, k = self._check(query, k)
        with self._lock:
            ok = self._allowed(allowed_mask)
            n_ok = int(ok.sum())
            if n_ok == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            k = min(k, n_ok)
            if self.uses_ann:
                if n_ok > self.exact_below:
                    found = self._search_hnsw(q, k, ok, filtered=n_ok < self._size)
                    if found is not None:
                        return found
                    self.counters.add(exact_fallbacks=1)
                else:
                    self.counters.add(exact_small=1)
            return self._search_exact(q, k, ok)

    def search_exact(self, query, k: int, allowed_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``search`` answered exactly whatever the mode (the ground truth recall is measured against)."""
        q, k = self._check(query, k)
        with self._lock:
            ok = self._allowed(allowed_mask)
            n_ok = int(ok.sum())
            if n_ok == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            return self._search_exact(q, min(k, n_ok), ok)

    def _check(self, query, k: int) -> tuple[np.ndarray, int]:
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.size != self.dim:
            raise ValueError(f"query must have {self.dim} values, got {q.size}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return q, int(k)

    def _allowed(self, allowed_mask: np.ndarray | None) -> np.ndarray:
        """Per position: alive and allowed."""
        ok = self._alive[:self._size].copy()
        if allowed_mask is not None:
            allowed_mask = np.asarray(allowed_mask, dtype=bool)
            ids = self._ids[:self._size]
            inside = ids < allowed_mask.size
            ok &= inside & allowed_mask[np.where(inside, ids, 0)]
        return ok

    def _search_exact(self, q: np.ndarray, k: int, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stored = self._stored()
        positions = np.flatnonzero(ok)
        # Scoring every row in place beats gathering most of them into a copy first.
        if positions.size == ok.size:
            scores = stored @ q
        else:
            scores = (stored @ q)[positions] if positions.size * 2 > ok.size else stored[positions] @ q
        top = np.argpartition(-scores, k - 1)[:k] if scores.size > k else np.arange(scores.size)
        top = top[np.argsort(-scores[top], kind="stable")]
        return self._ids[positions[top]].copy(), scores[top].astype(np.float32)

    def _search_hnsw(self, q: np.ndarray, k: int, ok: np.ndarray, filtered: bool):
        """HNSW; a filtered walk that comes back short is retried with the beam widened (efSearch x4; a
        tight filter starves the beam), and a walk still short at ``ef_max`` (unfiltered: at once) is
        walked again from the pivots nearest the query. None: still short after that."""
        sel = faiss.IDSelectorBitmap(np.packbits(ok, bitorder="little")) if filtered else None  # bit i: byte i>>3
        ef = min(max(self.ef_search, 2 * k), max(self.ef_max, 2 * k))
        self.counters.add(searches=1)
        while True:
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef) if sel is not None else \
                faiss.SearchParametersHNSW(efSearch=ef)
            scores, pos = self._index.search(q[None, :], k, params=params)
            pos, scores = pos[0], scores[0]
            if int((pos >= 0).sum()) < k and (ef >= self.ef_max or (sel is None and ef >= k)):
                # Unfiltered, a beam of k or more has visited every node reachable from where the descent
                # landed: a wider beam walks the same nodes again, other entry points do not.
                self.counters.add(reentries=1)
                pos, scores = _merged(pos, scores, *self._walk_from_pivots(q, k, params, ok if filtered else None), k)
                found = pos >= 0
                return (self._ids[pos[found]].copy(), scores[found].astype(np.float32)) if found.sum() >= k else None
            found = pos >= 0
            if int(found.sum()) >= k:
                return self._ids[pos[found]].copy(), scores[found].astype(np.float32)
            ef = min(ef * 4, self.ef_max)
            self.counters.add(widenings=1)

    def _walk_from_pivots(self, q: np.ndarray, k: int, params, ok: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """A level-0 walk started from the ``REENTRY_POINTS`` pivots (passing the filter) that score best."""
        index = faiss.downcast_index(self._index)
        if self._pivots is None or self._pivots[0] is not self._index:
            n = index.ntotal
            chosen = np.sort(np.random.default_rng(n).choice(n, min(PIVOTS, n), replace=False)).astype(np.int32)
            self._pivots = (self._index, chosen, self._stored()[chosen].copy())
        _, positions, vectors = self._pivots
        if ok is not None:
            keep = ok[positions]
            positions, vectors = positions[keep], vectors[keep]
        if positions.size == 0:
            return np.full(k, -1, np.int64), np.zeros(k, np.float32)
        ip = vectors @ q
        e = min(REENTRY_POINTS, ip.size)
        best = np.argpartition(-ip, e - 1)[:e] if ip.size > e else np.arange(ip.size)
        best = best[np.argsort(-ip[best])]
        entries = np.ascontiguousarray(positions[best][None, :], dtype=np.int32)  # faiss storage_idx_t
        entry_scores = np.ascontiguousarray(ip[best][None, :], dtype=np.float32)
        scores, labels = np.empty((1, k), np.float32), np.empty((1, k), np.int64)
        qq = np.ascontiguousarray(q[None, :], dtype=np.float32)
        # search_type 2: every entry enqueued in one walk (1 would walk from each in turn)
        index.search_level_0(1, faiss.swig_ptr(qq), k, faiss.swig_ptr(entries), faiss.swig_ptr(entry_scores),
                             faiss.swig_ptr(scores), faiss.swig_ptr(labels), e, 2, params)
        return labels[0], scores[0]


def _merged(pos_a: np.ndarray, scores_a: np.ndarray, pos_b: np.ndarray, scores_b: np.ndarray,
            k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k distinct positions of two walks' answers (-1 = empty slot), best first, padded with -1."""
    pos = np.concatenate([pos_a, pos_b])
    scores = np.concatenate([scores_a, scores_b])
    keep = pos >= 0
    pos, scores = pos[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    pos, scores = pos[order], scores[order]
    _, first = np.unique(pos, return_index=True)
    first = np.sort(first)[:k]
    out_pos, out_scores = np.full(k, -1, np.int64), np.zeros(k, np.float32)
    out_pos[:first.size], out_scores[:first.size] = pos[first], scores[first]
    return out_pos, out_scores
