"""Append-only arrays with capacity doubling, whose published prefixes never change.

The writer (fusion/hybrid.py) appends items in place of rebuilding a million-row array per write:
``append`` writes past the current length (growing the buffer 2x when full, so an append costs
O(appended) amortised) and ``view`` hands readers a read-only prefix. A later append writes only
rows no earlier view covers, so a published snapshot holding a view never sees it change. A
buffer that cannot be written (a read-only memory map of the artifacts) is copied on the first
append, after which pages are private to this process.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class Growable:
    """One append-only array (any trailing shape)."""

    def __init__(self, initial: np.ndarray) -> None:
        self._buf = initial
        self.n = len(initial)
        self._view: np.ndarray | None = None

    @classmethod
    def empty(cls, dtype, tail: tuple = ()) -> "Growable":
        return cls(np.zeros((0, *tail), dtype))

    def __len__(self) -> int:
        return self.n

    @property
    def dtype(self):
        return self._buf.dtype

    def append(self, values) -> None:
        values = np.asarray(values, self._buf.dtype)
        need = self.n + len(values)
        if need > len(self._buf) or not self._buf.flags.writeable:
            cap = max(need, 2 * len(self._buf), 16)
            grown = np.empty((cap, *self._buf.shape[1:]), self._buf.dtype)
            grown[:self.n] = self._buf[:self.n]
            self._buf = grown
        self._buf[self.n:need] = values
        self.n = need
        self._view = None

    def view(self) -> np.ndarray:
        """The first ``n`` rows, read-only (the same object until the next append).

        Safe beside one appending thread: ``n`` is read before the buffer (``append`` replaces the
        buffer before it raises ``n``), and a cached view of another length is never returned."""
        n = self.n
        v = self._view
        if v is None or len(v) != n:
            v = self._buf[:n]
            v.flags.writeable = False
            self._view = v
        return v

    def is_view(self, arr) -> bool:
        """Whether ``arr`` is this array's current view (so appending continues it)."""
        return self._view is not None and arr is self._view


class GrowingCSR:
    """A CSR matrix that grows by rows: data / indices / indptr are Growables, so appending B rows
    costs their non-zeros, and ``matrix()`` shares the buffers with every earlier matrix."""

    def __init__(self, x: sp.csr_matrix) -> None:
        x = sp.csr_matrix(x)
        self.data = Growable(np.asarray(x.data, np.float32))
        self.indices = Growable(np.asarray(x.indices, np.int32))
        # int32 like scipy's own choice for these sizes: mixed index dtypes would make scipy copy both.
        self.indptr = Growable(np.asarray(x.indptr, np.int32))
        self.width = x.shape[1]
        self._matrix: sp.csr_matrix | None = None

    def append(self, rows: sp.csr_matrix) -> None:
        rows = sp.csr_matrix(rows)
        offset = self.indptr.view()[-1]
        self.data.append(rows.data)
        self.indices.append(rows.indices)
        if int(offset) + rows.nnz >= 2 ** 31:
            raise OverflowError("item feature matrix over 2**31 non-zeros")
        self.indptr.append(rows.indptr[1:].astype(np.int64) + int(offset))
        self.width = max(self.width, rows.shape[1])
        self._matrix = None

    def matrix(self) -> sp.csr_matrix:
        if self._matrix is None:
            n = len(self.indptr) - 1
            self._matrix = sp.csr_matrix((self.data.view(), self.indices.view(), self.indptr.view()),
                                         shape=(n, self.width), copy=False)
        return self._matrix
