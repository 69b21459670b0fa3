"""Candidate selection for the Recommender: per-snapshot item metadata and the ANN index.

Ranking (``mixrec.ranking.rank``) only ever needs, per type in play, the ``pool`` best
allowed items: its result over those candidates equals its result over the catalog.
So a request narrows the catalog to that candidate set first — exactly (one matrix
product, then per-type argpartition) or, at ``serving.ann_threshold`` items and above,
through per-type HNSW indexes over LightFM vectors ``[repr, bias]`` queried with
``[user, 1]`` — and ranks a small table of candidates. Candidates are re-scored
exactly with the current snapshot, so an index built from an older snapshot costs
recall only, never wrong scores.

Index upkeep: when the model publishes a snapshot with other items or other item
vectors, a background thread first looks for persisted indexes built over exactly those
items and vectors (mixrec/ann_store.py: the service's ``state_dir/ann``, then the trained
artifacts' ``ann/``, written by ``mixrec train``), and builds new ones only when none fit,
then persists them; requests keep using the previous ones meanwhile. Until the first set is
loaded or built the Recommender is not ready (``ready``; services/operate.py). Items the
index does not hold yet (added since the build) are scored exactly and merged, so a new
item is recommendable at once; removed items map to no row.

Honesty of the ANN path: the indexes count their searches, widenings, re-entries and exact fallbacks
(mixrec/ann.py ``SearchCounters``), and a sample of searches is re-run exactly on a
background thread (mixrec/ann_recall.py) for the recall the metrics report.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fusion.scoring import ann_vectors
from mixrec.ann import CandidateIndex, SearchCounters
from mixrec.ann_recall import RecallSampler
from mixrec.ann_store import AnnStore, ids_digest
from mixrec.ranking import top_k

log = logging.getLogger("mixrec.candidates")

OVERFETCH = 2  # ANN fetches this many times the pool a type needs (exact re-scoring sorts them out)
HNSW_M, EF_CONSTRUCTION, EF_SEARCH, EF_MAX = 16, 80, 128, 2048
EXACT_BELOW = 2048  # a filter letting this few items of a type through is answered exactly (cheaper, exact)
STORE_DIR = "ann"  # the persisted indexes' directory inside an artifact directory or the state_dir


@dataclass(frozen=True)
class SnapshotMeta:
    """Row-aligned item metadata of one snapshot, from its item columns (fusion/item_catalog.py):
    type codes, rows per type and per tag. Extended, not rebuilt, when a snapshot only appends rows."""

    ids: Sequence[str]  # the snapshot's item_ids
    items: Sequence  # mixrec.catalog.Item per row, built on demand (a CatalogView)
    type_codes: np.ndarray  # (N,) int8 index into type_names
    rows_by_type: tuple[np.ndarray, ...]  # per type_names entry: its rows, ascending
    tag_rows: dict[str, np.ndarray]
    type_names: tuple[str, ...]  # the catalogue's type labels, in code order

    @classmethod
    def build(cls, snap, previous: "SnapshotMeta | None" = None) -> "SnapshotMeta":
        """``snap``'s metadata; O(rows appended) when ``previous`` is the metadata of a prefix of its rows."""
        view = snap.items
        n = len(view)
        codes, type_names = view.type_codes, view.type_names
        tag_codes, tag_ends, names = view.tag_csr()
        if previous is not None and len(previous.ids) <= n and view.ids[:len(previous.ids)] == previous.ids:
            n0 = len(previous.ids)
            old_rows = previous.rows_by_type + (np.zeros(0, np.int64),) * (len(type_names) - len(previous.rows_by_type))
            by_type = tuple(np.concatenate([old, n0 + np.flatnonzero(codes[n0:] == c)])
                            for c, old in enumerate(old_rows))
            tag_rows = dict(previous.tag_rows)
            lo = int(tag_ends[n0 - 1]) if n0 else 0
            for name, rows in _rows_per_tag(tag_codes[lo:], tag_ends[n0:] - lo, names, n0).items():
                old = tag_rows.get(name)
                tag_rows[name] = rows if old is None else np.concatenate([old, rows])
            return cls(view.ids, view, codes, by_type, tag_rows, type_names)
        return cls(view.ids, view, codes, tuple(np.flatnonzero(codes == c) for c in range(len(type_names))),
                   _rows_per_tag(tag_codes, tag_ends, names, 0), type_names)

    def tag_mask(self, tags) -> np.ndarray:
        mask = np.zeros(len(self.ids), bool)
        for t in tags:
            rows = self.tag_rows.get(t)
            if rows is not None:
                mask[rows] = True
        return mask


def _rows_per_tag(codes: np.ndarray, ends: np.ndarray, names: list[str], first_row: int) -> dict[str, np.ndarray]:
    """Tag name -> ascending rows (``first_row`` + position) of a tag-code CSR, vectorised."""
    if codes.size == 0:
        return {}
    lengths = np.diff(np.concatenate([[0], ends]))
    rows = np.repeat(np.arange(len(ends), dtype=np.int64), lengths)
    key = np.unique(codes.astype(np.int64) * len(ends) + rows)  # a row lists a tag once; sorted by tag, row
    tag, row = np.divmod(key, len(ends))
    cut = np.flatnonzero(np.diff(tag)) + 1
    return {names[int(t[0])]: first_row + r for t, r in zip(np.split(tag, cut), np.split(row, cut))}


def single_threaded_blas() -> None:
    """One BLAS thread per process. A request's scoring is one small matrix-vector product; with
    several BLAS threads on a busy 2-core host it waits on thread hand-offs (measured: 100k x 32
    sgemv p99 20 ms with 2 threads vs 1 ms with 1). Concurrency comes from concurrent requests."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def exact_candidates(scores: np.ndarray, meta: SnapshotMeta, allowed: np.ndarray, type_codes: list[int],
                     pool: int) -> np.ndarray:
    """Per type in play, the ``pool`` best allowed rows (the exact candidate set for ``rank``)."""
    out = []
    for c in type_codes:
        rows = meta.rows_by_type[c]
        out.append(top_k(scores, pool, rows[allowed[rows]]))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


@dataclass
class _Built:
    snap: object  # the snapshot the vectors came from
    ids: tuple[str, ...]
    indexes: tuple[CandidateIndex, ...]  # per type code; ids are rows of ``ids``
    seconds: float  # building or loading them
    source: str  # "built" or the directory they were loaded from


@dataclass
class AnnView:
    """The built indexes seen from one (possibly newer) snapshot."""

    built: _Built
    to_current: np.ndarray | None  # build row -> current row (-1: removed); None: identical rows
    fresh: np.ndarray  # current rows the indexes do not hold (scored exactly)
    n_current: int
    _cache: dict = field(default_factory=dict)

    def rows(self, build_rows: np.ndarray) -> np.ndarray:
        if self.to_current is None:
            return build_rows
        r = self.to_current[build_rows]
        return r[r >= 0]

    def build_mask(self, allowed: np.ndarray) -> np.ndarray:
        """``allowed`` (current rows) as a mask over build rows."""
        if self.to_current is None:
            return allowed[:len(self.built.ids)]
        ok = self.to_current >= 0
        return ok & allowed[np.where(ok, self.to_current, 0)]


# ---------------------------------------------------------------------- building, persisting
def type_codes_of(snap) -> tuple[np.ndarray, tuple[str, ...]]:
    """(type code per row, the labels by code) of ``snap``: its item columns' own codes (a stand-in
    snapshot without columns has them derived from its labels)."""
    view = getattr(snap, "items", None)
    if view is not None:
        return view.type_codes, view.type_names
    names = snap.type_names
    code = {t: c for c, t in enumerate(names)}
    return np.fromiter((code[t] for t in snap.item_types), np.int8, len(snap.item_ids)), names


def new_index(dim: int, counters: SearchCounters | None = None) -> CandidateIndex:
    # The catalog-level threshold decided ANN; a type's index uses HNSW whatever its size.
    return CandidateIndex(dim, ann_threshold=1, hnsw_m=HNSW_M, ef_construction=EF_CONSTRUCTION,
                          ef_search=EF_SEARCH, ef_max=EF_MAX, exact_below=EXACT_BELOW, counters=counters)


def build_indexes(vectors: np.ndarray, rows: list[np.ndarray],
                  counters: SearchCounters | None = None) -> tuple[CandidateIndex, ...]:
    """One HNSW index per item type over ``vectors`` (``ann_vectors``), holding that type's ``rows``."""
    indexes = []
    for r in rows:
        idx = new_index(vectors.shape[1], counters)
        idx.add(r, vectors[r])
        indexes.append(idx)
    return tuple(indexes)


def _inputs(snap) -> tuple[np.ndarray, list[np.ndarray], str]:
    """The vectors, each type's rows to index (deleted items' rows left out) and the digest that
    says which rows those are."""
    vectors, (codes, names) = ann_vectors(snap), type_codes_of(snap)
    alive = getattr(snap, "alive", None)
    if alive is not None:
        codes = np.where(alive, codes, -1).astype(np.int8)  # no type: in no index, and the digest says so
    return vectors, [np.flatnonzero(codes == c) for c in range(len(names))], ids_digest(snap.item_ids, codes)


def _params() -> dict:
    return {"hnsw_m": HNSW_M, "ef_construction": EF_CONSTRUCTION}


def persist_indexes(snap, directory: str | Path) -> dict:
    """Build the per-type indexes of ``snap`` and write them into ``directory`` (``mixrec train``'s hook)."""
    t0 = time.perf_counter()
    vectors, rows, digest = _inputs(snap)
    indexes = build_indexes(vectors, rows)
    seconds = time.perf_counter() - t0
    AnnStore(directory).save(digest, len(vectors), indexes, {**_params(), "build_seconds": round(seconds, 3)})
    return {"items": len(vectors), "build_seconds": seconds, "directory": str(directory),
            "bytes": sum(ix.nbytes() for ix in indexes)}


def artifacts_path(artifacts: str) -> Path | None:
    """The directory of ``serving.artifacts`` (a path, or ``bentoml:<tag>`` in the model store)."""
    if not artifacts.startswith("bentoml:"):
        return Path(artifacts)
    try:
        import bentoml

        return Path(bentoml.models.get(artifacts[len("bentoml:"):]).path)
    except Exception as e:  # no store entry: nothing persisted to read there
        log.info("no model store entry for %s (%s): no persisted ANN indexes there", artifacts, e)
        return None


# ---------------------------------------------------------------------- serving
class AnnCandidates:
    """Keeps per-type HNSW indexes of the model's LightFM item vectors fresh, off the request path.

    ``store``: where built indexes are persisted (None: not persisted); ``read_from``: further
    directories to look in, after ``store`` (the trained artifacts' ``ann/``).
    """

    def __init__(self, threshold: int, store: str | Path | None = None, read_from=()) -> None:
        self.threshold = threshold
        self.store = None if store is None else Path(store)
        self.read_from = tuple(read_from)
        self.counters = SearchCounters()
        self.recall = RecallSampler()
        self._built: _Built | None = None
        self._view: tuple[object, AnnView] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failed = False  # the last attempt raised: serve exactly rather than never be ready
        self.builds = 0
        self.loads = 0

    @classmethod
    def for_config(cls, cfg) -> "AnnCandidates":
        """Persisted in ``serving.state_dir/ann``; also read from the trained artifacts' ``ann/``."""
        return cls(cfg.serving.ann_threshold, Path(cfg.serving.state_dir) / STORE_DIR,
                   read_from=(lambda: artifacts_path(cfg.serving.artifacts),))

    def active_for(self, snap) -> bool:
        return len(snap.item_ids) >= self.threshold

    def ready(self, snap) -> bool:
        """False while ``snap`` needs ANN indexes and none were loaded or built yet (starts getting them)."""
        if not self.active_for(snap) or self._built is not None or self._failed:
            return True
        self.refresh(snap)
        return False

    def describe(self) -> dict:
        b = self._built
        return {"threshold": self.threshold, "built_items": len(b.ids) if b else 0, "builds": self.builds,
                "loads": self.loads, "source": b.source if b else None,
                "last_build_seconds": round(b.seconds, 3) if b and b.source == "built" else None,
                "last_load_seconds": round(b.seconds, 3) if b and b.source != "built" else None,
                "bytes": sum(ix.nbytes() for ix in b.indexes) if b else 0,
                **self.counters.as_dict(), **self.recall.describe()}

    # ------------------------------------------------------------------ upkeep
    def refresh(self, snap, wait: bool = False) -> None:
        """Start a background (re)build when ``snap`` is not the indexed snapshot; never blocks unless ``wait``."""
        with self._lock:
            b = self._built
            if (b is not None and b.snap is snap) or not self.active_for(snap):
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._rebuild, args=(snap,), name="mixrec-ann", daemon=True)
                self._thread.start()
            thread = self._thread
        if wait:
            thread.join()

    def _rebuild(self, snap) -> None:
        try:
            b = self._built
            if b is not None and b.ids == snap.item_ids and np.array_equal(b.snap.item_repr, snap.item_repr) \
                    and np.array_equal(b.snap.item_bias, snap.item_bias):
                self._built = _Built(snap, snap.item_ids, b.indexes, b.seconds, b.source)  # same vectors: adopt
                return
            t0 = time.perf_counter()
            vectors, rows, digest = _inputs(snap)
            for store in self._stores():
                indexes = store.load(digest, vectors, rows, lambda: new_index(vectors.shape[1], self.counters))
                if indexes is not None:
                    self._built = _Built(snap, snap.item_ids, indexes, time.perf_counter() - t0, str(store.path))
                    self.loads += 1
                    self._failed = False
                    log.info("ANN indexes over %d items loaded from %s in %.1fs", len(vectors), store.path,
                             self._built.seconds)
                    return
            indexes = build_indexes(vectors, rows, self.counters)
            self._built = _Built(snap, snap.item_ids, indexes, time.perf_counter() - t0, "built")
            self.builds += 1
            self._failed = False
            log.info("ANN indexes built over %d items in %.1fs", len(vectors), self._built.seconds)
            if self.store is not None:
                AnnStore(self.store).save(digest, len(vectors), indexes,
                                          {**_params(), "build_seconds": round(self._built.seconds, 3)})
        except Exception:  # keep serving from the previous indexes (or exactly)
            self._failed = self._built is None
            log.exception("ANN index build failed")

    def _stores(self) -> list[AnnStore]:
        dirs = [self.store] if self.store is not None else []
        for d in self.read_from:
            d = d() if callable(d) else d
            if d is not None:
                dirs.append(Path(d) / STORE_DIR)
        return [AnnStore(d) for d in dict.fromkeys(dirs) if (d / "manifest.json").exists()]

    # ------------------------------------------------------------------ reading
    def view(self, snap) -> AnnView | None:
        """The current indexes mapped onto ``snap``'s rows, or None (below threshold / not built yet)."""
        b = self._built
        if b is None or not self.active_for(snap):
            return None
        cached = self._view
        if cached is not None and cached[0] is snap and cached[1].built is b:
            return cached[1]
        n, n_b = len(snap.item_ids), len(b.ids)
        if b.ids is snap.item_ids or (n >= n_b and snap.item_ids[:n_b] == b.ids):
            view = AnnView(b, None, np.arange(n_b, n, dtype=np.int64), n)  # same rows, maybe items appended
        else:
            index = snap.item_index
            to_current = np.fromiter((index.get(i, -1) for i in b.ids), np.int64, n_b)
            covered = np.zeros(n, bool)
            covered[to_current[to_current >= 0]] = True
            view = AnnView(b, to_current, np.flatnonzero(~covered), n)
        self._view = (snap, view)
        return view

    def candidates(self, view: AnnView, query: np.ndarray, allowed: np.ndarray, type_codes: list[int],
                   pool: int, n_excluded: int, tags_filtered: bool) -> np.ndarray:
        """Per type in play, at least ``pool`` allowed current rows where the index has them (approximate)."""
        out = []
        fetch = pool * OVERFETCH
        for c in type_codes:
            if c >= len(view.built.indexes):  # a type first seen after the build: its rows are all fresh
                continue
            idx = view.built.indexes[c]
            if len(idx) == 0:
                continue
            # Unfiltered walks are the fast path: over-fetch past the excluded rows, drop them after.
            mask = view.build_mask(allowed) if tags_filtered else None
            k = fetch + (0 if tags_filtered else n_excluded)
            found, _ = idx.search(query, k, allowed_mask=mask)
            self.recall.offer(idx, query, k, mask, found)
            rows = view.rows(found)
            rows = rows[allowed[rows]]
            if rows.size < pool and not tags_filtered and len(idx) > rows.size:
                mask = view.build_mask(allowed)
                found, _ = idx.search(query, fetch, allowed_mask=mask)
                self.recall.offer(idx, query, fetch, mask, found)
                rows = view.rows(found)
                rows = rows[allowed[rows]]
            out.append(rows)
        return np.concatenate(out) if out else np.zeros(0, np.int64)
