"""Row surgery on the writer's arrays: replace some rows of a csr or dense array, append rows,
widen to new feature columns. Each copies in C (a row gather), never loops over rows in Python."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def widen(x: sp.csr_matrix, width: int) -> sp.csr_matrix:
    """``x`` with ``width`` columns (new feature columns are empty), sharing its arrays."""
    if x.shape[1] == width:
        return x
    return sp.csr_matrix((x.data, x.indices, x.indptr), shape=(x.shape[0], width))


def with_rows(x: sp.csr_matrix, rows: np.ndarray, new: sp.csr_matrix, width: int | None = None) -> sp.csr_matrix:
    """``x`` with rows ``rows`` replaced by ``new``'s rows, in order; rows at or past
    ``x.shape[0]`` must be exactly the next ones (they are appended). ``width`` widens the result
    (new feature columns). Each row keeps its own column order, so the result equals a rebuild."""
    n, m = x.shape[0], len(rows)
    width = max(x.shape[1], new.shape[1]) if width is None else width
    total = max(n, int(rows.max()) + 1) if m else n
    if total - n != int(np.count_nonzero(rows >= n)):
        raise ValueError("appended rows must follow the matrix's last row")
    order = np.arange(total)
    order[rows] = n + np.arange(m)
    stacked = sp.vstack([widen(sp.csr_matrix(x), width), widen(sp.csr_matrix(new), width)], format="csr")
    return stacked[order]


def with_dense_rows(x: np.ndarray, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
    """A copy of ``x`` (rows past its end appended, as ``with_rows``) with rows ``rows`` set to ``new``."""
    total = max(x.shape[0], int(rows.max()) + 1) if len(rows) else x.shape[0]
    out = np.empty((total, *x.shape[1:]), x.dtype)
    out[:x.shape[0]] = x
    out[rows] = new
    return out
