"""CandidateIndex: top-k inner-product search over item vectors, exact or HNSW by catalog size.

Below ``ann_threshold`` live items, search is an exact matrix product (numpy/BLAS).
At or above it, a faiss ``IndexHNSWFlat`` (inner-product metric) answers, with the
caller's filter applied inside the graph walk through an ``IDSelectorBitmap``, so
filtered results are still k items whenever k pass the filter. When the filter is
so tight that few items pass (``exact_below`` or fewer), or HNSW comes back short,
the same query runs exactly over the items that pass: small filtered sets stay exact.

Ids are the caller's non-negative integers (the Recommender's item rows), and
``allowed_mask`` is a boolean array indexed by those ids. HNSW cannot delete, so
removals are tombstones filtered at search time; the index compacts and rebuilds
once tombstones pass ``rebuild_fraction`` of it. One lock serialises mutation and
search: HNSW must not be searched while it grows.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np


class CandidateIndex:
    def __init__(self, dim: int, ann_threshold: int = 50_000, *, hnsw_m: int = 32, ef_construction: int = 100,
                 ef_search: int = 128, exact_below: int = 2048, rebuild_fraction: float = 0.2):
        if dim < 1 or ann_threshold < 1 or hnsw_m < 2 or ef_search < 1:
            raise ValueError("dim, ann_threshold, ef_search must be >= 1 and hnsw_m >= 2")
        self.dim, self.ann_threshold = int(dim), int(ann_threshold)
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.exact_below, self.rebuild_fraction = exact_below, rebuild_fraction
        self._lock = threading.RLock()
        self._vecs = np.zeros((0, self.dim), dtype=np.float32)  # row = position; capacity grows by doubling
        self._ids = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._size = 0  # positions in use (alive or tombstoned)
        self._pos: dict[int, int] = {}  # id -> position
        self._hnsw: faiss.IndexHNSWFlat | None = None  # holds positions 0.._size when present

    # ------------------------------------------------------------------ state

    def __len__(self) -> int:
        return len(self._pos)

    @property
    def uses_ann(self) -> bool:
        return self._hnsw is not None

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._pos

    def describe(self) -> dict:
        return {"items": len(self), "mode": "hnsw" if self.uses_ann else "exact", "dim": self.dim,
                "ann_threshold": self.ann_threshold, "tombstones": self._size - len(self)}

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
            self._reserve(start + ids.size)
            self._vecs[start:start + ids.size] = vectors
            self._ids[start:start + ids.size] = ids
            self._alive[start:start + ids.size] = True
            self._size += ids.size
            self._pos.update(zip(ids.tolist(), range(start, start + ids.size)))
            if self._hnsw is not None:
                self._hnsw.add(vectors)
            self._maintain()

    def remove(self, ids) -> int:
        """Remove items by id; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            n = self._tombstone(np.asarray(ids, dtype=np.int64).reshape(-1))
            self._maintain()
            return n

    def _tombstone(self, ids: np.ndarray) -> int:
        n = 0
        for i in ids.tolist():
            pos = self._pos.pop(i, None)
            if pos is not None:
                self._alive[pos] = False
                n += 1
        return n

    def _reserve(self, needed: int) -> None:
        cap = self._vecs.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, 2 * cap, 64)
        for name in ("_vecs", "_ids", "_alive"):
            old = getattr(self, name)
            grown = np.zeros((new_cap,) + old.shape[1:], dtype=old.dtype)
            grown[:self._size] = old[:self._size]
            setattr(self, name, grown)

    def _maintain(self) -> None:
        live, dead = len(self), self._size - len(self)
        if dead and dead > self.rebuild_fraction * max(self._size, 1):
            self._compact()
        if live >= self.ann_threshold and self._hnsw is None:
            self._build_hnsw()
        elif live < self.ann_threshold and self._hnsw is not None:
            self._hnsw = None  # exact is both cheaper and exact at this size

    def _compact(self) -> None:
        keep = np.flatnonzero(self._alive[:self._size])
        self._vecs = np.ascontiguousarray(self._vecs[keep])
        self._ids, self._alive = self._ids[keep], np.ones(keep.size, dtype=bool)
        self._size = keep.size
        self._pos = dict(zip(self._ids.tolist(), range(keep.size)))
        if self._hnsw is not None:
            self._build_hnsw()

    def _build_hnsw(self) -> None:
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.add(self._vecs[:self._size])
        self._hnsw = index

    # ------------------------------------------------------------------ search

    def search(self, query, k: int, allowed_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best (ids, inner-product scores), best first, among items where ``allowed_mask[id]``."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.size != self.dim:
            raise ValueError(f"query must have {self.dim} values, got {q.size}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self._lock:
            ok = self._alive[:self._size].copy()
            if allowed_mask is not None:
                allowed_mask = np.asarray(allowed_mask, dtype=bool)
                ids = self._ids[:self._size]
                inside = ids < allowed_mask.size
                ok &= inside & allowed_mask[np.where(inside, ids, 0)]
            n_ok = int(ok.sum())
            if n_ok == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            k = min(k, n_ok)
            if self._hnsw is not None and n_ok > self.exact_below:
                found = self._search_hnsw(q, k, ok, filtered=n_ok < self._size)
                if found is not None:
                    return found
            return self._search_exact(q, k, np.flatnonzero(ok))

    def _search_exact(self, q: np.ndarray, k: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = self._vecs[positions] @ q
        top = np.argpartition(-scores, k - 1)[:k] if scores.size > k else np.arange(scores.size)
        top = top[np.argsort(-scores[top], kind="stable")]
        return self._ids[positions[top]].copy(), scores[top].astype(np.float32)

    def _search_hnsw(self, q: np.ndarray, k: int, ok: np.ndarray, filtered: bool):
        ef = max(self.ef_search, 2 * k)
        if filtered:
            bitmap = np.packbits(ok, bitorder="little")  # faiss reads bit i at byte i >> 3, bit i & 7
            params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(bitmap), efSearch=ef)
        else:
            params = faiss.SearchParametersHNSW(efSearch=ef)
        scores, pos = self._hnsw.search(q[None, :], k, params=params)
        pos, scores = pos[0], scores[0]
        found = pos >= 0
        if found.sum() < k:
            return None  # the graph walk came back short under a tight filter: go exact
        pos, scores = pos[found], scores[found]
        return self._ids[pos].copy(), scores.astype(np.float32)
