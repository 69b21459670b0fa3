"""Persisted ANN indexes: faiss files in an ``ann/`` directory, checked against the arrays they index.

Building the per-type HNSW indexes of a 1M-item catalogue takes about a minute; reading them
back takes about a second. So they are written once (``mixrec train``, and the service after a
background rebuild) and read at start — but never trusted: an index is used only when it was
built over exactly the caller's items and vectors, otherwise the caller rebuilds.

Layout of an ``ann/`` directory::

    manifest.json      {"format": 1, "faiss": "1.x", "items": N, "dim": d, "digest": "...",
                        "indexes": [{"file": "<tag>-0.faiss", "ids": "<tag>-0.npy"}, ...], ...}
    <tag>-<i>.faiss    faiss.write_index of index i (HNSW, or flat below its threshold)
    <tag>-<i>.npy      index i's ids per position (-1: a tombstone)
    .lock              flock: one writer at a time

A writer writes its data files under a fresh tag, replaces the manifest atomically (os.replace)
and then removes the files no manifest names, so a reader that read the manifest finds the
files it names (a file removed under a reader that already opened it stays readable on Linux).

Checks on load (a failed one is logged and answers None):
  * ``format`` and ``dim`` are this module's / the caller's;
  * ``digest`` (blake2b of the item ids and their type codes, ``ids_digest``) is the caller's;
  * each index holds exactly the rows the caller expects for it;
  * the vectors each faiss index stores equal the caller's vectors for those rows, up to float
    rounding (``rtol``/``atol``): BLAS may round a recomputed item vector differently on another
    thread count, and an index built from slightly different vectors costs recall, never a wrong
    score, because the caller re-scores candidates exactly. A changed vector fails the check.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import faiss
import numpy as np

from mixrec.ann import CandidateIndex

log = logging.getLogger("mixrec.ann_store")
FORMAT = 1
MANIFEST = "manifest.json"
RTOL, ATOL = 1e-5, 1e-6


def ids_digest(item_ids: Sequence[str], type_codes: np.ndarray) -> str:
    """What an index set was built over, by content: the item ids in row order and their type codes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(len(item_ids).to_bytes(8, "little"))
    h.update("\x00".join(item_ids).encode())
    h.update(np.ascontiguousarray(type_codes, np.int8).tobytes())
    return h.hexdigest()


class AnnStore:
    def __init__(self, path: str | os.PathLike, *, read_flags: int = 0) -> None:
        self.path = Path(path)
        self.read_flags = read_flags

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def manifest(self) -> dict | None:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("unreadable ANN manifest in %s (%s)", self.path, e)
            return None

    # ------------------------------------------------------------------ write
    def save(self, digest: str, n_items: int, indexes: Sequence[CandidateIndex], extra: dict | None = None) -> Path:
        """Write ``indexes`` (built over ``n_items`` items whose ids/types give ``digest``) as the stored set."""
        if not indexes:
            raise ValueError("no indexes to save")
        dims = {ix.dim for ix in indexes}
        if len(dims) != 1:
            raise ValueError(f"indexes of different dimensions {sorted(dims)}")
        with self._locked():
            tag = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
            entries = []
            for i, ix in enumerate(indexes):
                ids, alive = ix.position_ids()
                files = {"file": f"{tag}-{i}.faiss", "ids": f"{tag}-{i}.npy"}
                faiss.write_index(ix.faiss_index(), str(self.path / files["file"]))
                np.save(self.path / files["ids"], np.where(alive, ids, -1))
                entries.append({**files, "items": len(ix), "mode": ix.describe()["mode"]})
            manifest = {"format": FORMAT, "faiss": faiss.__version__, "items": int(n_items), "dim": dims.pop(),
                        "digest": digest, "indexes": entries, "written_at": time.time(), **(extra or {})}
            fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=self.path)
            with os.fdopen(fd, "w") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path / MANIFEST)
            keep = {MANIFEST, ".lock"} | {e[k] for e in entries for k in ("file", "ids")}
            for p in self.path.iterdir():
                if p.name not in keep:
                    p.unlink(missing_ok=True)
        return self.path

    # ------------------------------------------------------------------ read
    def load(self, digest: str, vectors: np.ndarray, rows: Sequence[np.ndarray],
             make_index: Callable[[], CandidateIndex]) -> tuple[CandidateIndex, ...] | None:
        """The stored indexes when they were built over exactly these items and vectors, else None.

        ``vectors``: (N, dim) of every item row; ``rows[i]``: the rows index i must hold (ascending);
        ``make_index()``: an empty CandidateIndex configured as the caller serves (counters, efSearch).
        """
        m = self.manifest()
        if m is None:
            return None
        why = self._mismatch(m, digest, vectors, rows)
        if why is None:
            try:
                out = []
                for entry, expected in zip(m["indexes"], rows):
                    index = faiss.read_index(str(self.path / entry["file"]), self.read_flags)
                    ids = np.load(self.path / entry["ids"], allow_pickle=False)
                    ix = make_index().restore(index, np.maximum(ids, 0), ids >= 0)
                    why = _vectors_differ(ix, expected, vectors)
                    if why:
                        break
                    out.append(ix)
            except Exception as e:  # a torn or foreign file: rebuild rather than fail
                why = f"unreadable ({type(e).__name__}: {e})"
        if why:
            log.warning("not using the ANN indexes in %s: %s; they will be rebuilt", self.path, why)
            return None
        return tuple(out)

    @staticmethod
    def _mismatch(m: dict, digest: str, vectors: np.ndarray, rows: Sequence[np.ndarray]) -> str | None:
        if m.get("format") != FORMAT:
            return f"format {m.get('format')!r}, this mixrec reads {FORMAT}"
        if m.get("items") != len(vectors) or m.get("dim") != vectors.shape[1]:
            return f"built over {m.get('items')} items of dim {m.get('dim')}, the model has {vectors.shape}"
        if m.get("digest") != digest:
            return "built over other item ids or types"
        if len(m.get("indexes", ())) != len(rows):
            return f"{len(m.get('indexes', ()))} indexes, expected {len(rows)}"
        return None


CHECK_BLOCK = 65_536  # rows compared at a time: the check's temporaries stay a few MB, not the index's size


def _vectors_differ(ix: CandidateIndex, expected_rows: np.ndarray, vectors: np.ndarray) -> str | None:
    ids = ix.ids()
    if not np.array_equal(np.sort(ids), expected_rows):
        return f"an index holds {ids.size} rows, not the {expected_rows.size} expected"
    # Block by block: at 1M items whole-index copies and comparison temporaries were ~0.3 GB of the
    # replica's peak memory while loading (BENCHMARKS.md "One box: ANN").
    for start in range(0, ids.size, CHECK_BLOCK):
        block = ids[start:start + CHECK_BLOCK]
        stored = ix.vectors_at(start, start + block.size)
        want = vectors[block]
        if not np.allclose(stored, want, rtol=RTOL, atol=ATOL):
            worst = float(np.max(np.abs(stored - want)))
            return f"the stored vectors differ from the model's (max abs difference {worst:.3g})"
    return None
