"""Train/test splits for the three protocols: warm, cold items, cold users.

Splits start from an ``InteractionLog`` (user, item, timestamp triples over the
whole catalog's index space) so that the cold-user split can order each user's
history in time. Every split is deterministic given its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from tools.evaluation.protocol import EvalData, UserQuery

__all__ = [
    "InteractionLog", "WarmSplit", "ColdItemSplit", "ColdUserSplit", "binary_matrix",
    "warm_split", "random_warm_split", "cold_item_split", "cold_user_split", "liked_items_text",
    "ProtocolSplits", "protocol_splits",
]


def binary_matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Implicit-feedback csr: 1.0 where a (user, item) pair occurs at least once."""
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


@dataclass(frozen=True)
class InteractionLog:
    """Positive interactions as parallel arrays; ``timestamps`` orders a user's history."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        if not (len(self.users) == len(self.items) == len(self.timestamps)):
            raise ValueError("users, items and timestamps must have the same length")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)

    def matrix(self) -> sp.csr_matrix:
        return binary_matrix(self.users, self.items, self.shape)

    def select(self, keep: np.ndarray) -> "InteractionLog":
        return InteractionLog(self.users[keep], self.items[keep], self.timestamps[keep], self.n_users, self.n_items)

    @classmethod
    def from_matrix(cls, m: sp.spmatrix, timestamps: sp.spmatrix | None = None) -> "InteractionLog":
        """From a csr of positives; ``timestamps`` (same sparsity) is optional, else all zero."""
        coo = sp.coo_matrix(m)
        ts = (np.zeros(coo.nnz) if timestamps is None
              else np.asarray(sp.csr_matrix(timestamps)[coo.row, coo.col]).ravel().astype(np.float64))
        return cls(coo.row.astype(np.int64), coo.col.astype(np.int64), ts, m.shape[0], m.shape[1])


@dataclass
class WarmSplit:
    """Known users, known items: fit on ``train``, rank every item not in ``train`` for ``test``."""

    train: sp.csr_matrix
    test: sp.csr_matrix
    name: str = "warm"


@dataclass
class ColdItemSplit:
    """``cold_items`` have no interaction in ``train``; ``test`` holds exactly their interactions."""

    train: sp.csr_matrix
    test: sp.csr_matrix
    cold_items: np.ndarray
    name: str = "cold_items"

    @property
    def candidates(self) -> np.ndarray:
        mask = np.zeros(self.train.shape[1], dtype=bool)
        mask[self.cold_items] = True
        return mask


@dataclass
class ColdUserSplit:
    """Held-out users: empty ``train`` rows, a few ``known`` items each, later interactions in ``test``.

    ``queries[i]`` describes ``cold_users[i]``; ``test`` and ``known`` are indexed by
    position in ``cold_users`` (one row per cold user), ``known`` is excluded from ranking.
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    known: sp.csr_matrix
    cold_users: np.ndarray
    queries: list[UserQuery]
    name: str = "cold_users"


def warm_split(train: sp.spmatrix, test: sp.spmatrix) -> WarmSplit:
    """A given split (e.g. MovieLens ua.base / ua.test); test pairs also in train are dropped."""
    train = sp.csr_matrix(train, dtype=np.float32)
    test = sp.csr_matrix(test, dtype=np.float32)
    if train.shape != test.shape:
        raise ValueError(f"train {train.shape} and test {test.shape} differ in shape")
    test = test - test.multiply(train > 0)
    test.eliminate_zeros()
    return WarmSplit(train, test)


def random_warm_split(log: InteractionLog, test_share: float = 0.2, seed: int = 0) -> WarmSplit:
    """Per user, a random ``test_share`` of their distinct items goes to test (users keep >= 1 train item)."""
    if not 0.0 < test_share < 1.0:
        raise ValueError("test_share must be in (0, 1)")
    coo = log.matrix().tocoo()
    rng = np.random.default_rng(seed)
    # Random key per pair, then rank within the user: the lowest-keyed share goes to test.
    order = np.lexsort((rng.random(coo.nnz), coo.row))
    rows = coo.row[order]
    starts = np.searchsorted(rows, np.arange(log.n_users))
    counts = np.bincount(rows, minlength=log.n_users)
    pos = np.arange(len(rows)) - starts[rows]
    n_test = np.minimum(np.floor(counts * test_share).astype(np.int64), np.maximum(counts - 1, 0))
    is_test = pos < n_test[rows]
    cols = coo.col[order]
    return WarmSplit(binary_matrix(rows[~is_test], cols[~is_test], log.shape),
                     binary_matrix(rows[is_test], cols[is_test], log.shape), name="warm_random")


def cold_item_split(log: InteractionLog, share: float = 0.2, seed: int = 0) -> ColdItemSplit:
    """Hold out ``share`` of all items: every interaction with them moves to test."""
    if not 0.0 < share < 1.0:
        raise ValueError("share must be in (0, 1)")
    rng = np.random.default_rng(seed)
    n_cold = max(1, int(round(share * log.n_items)))
    cold = np.sort(rng.choice(log.n_items, size=n_cold, replace=False))
    is_cold = np.zeros(log.n_items, dtype=bool)
    is_cold[cold] = True
    in_test = is_cold[log.items]
    return ColdItemSplit(log.select(~in_test).matrix(), log.select(in_test).matrix(), cold)


def cold_user_split(log: InteractionLog, share: float = 0.2, n_known: int = 5, seed: int = 0,
                    query_text: Callable[[np.ndarray], str | None] | None = None) -> ColdUserSplit:
    """Hold out ``share`` of the users with more than ``n_known`` distinct items.

    For each held-out user the ``n_known`` earliest interactions (timestamp, then
    item index) are what the user told us: ``UserQuery.liked_items`` and, through
    ``query_text(known_items)``, an optional text. Everything later is the test set;
    nothing from it reaches the query.
    """
    if not 0.0 < share < 1.0:
        raise ValueError("share must be in (0, 1)")
    if n_known < 1:
        raise ValueError("n_known must be >= 1")
    # One row per distinct (user, item): its earliest timestamp.
    order = np.lexsort((log.timestamps, log.items, log.users))
    u, i, t = log.users[order], log.items[order], log.timestamps[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    u, i, t = u[first], i[first], t[first]

    counts = np.bincount(u, minlength=log.n_users)
    eligible = np.flatnonzero(counts > n_known)
    if len(eligible) == 0:
        raise ValueError(f"no user has more than {n_known} interactions")
    rng = np.random.default_rng(seed)
    n_cold = max(1, int(round(share * len(eligible))))
    cold_users = np.sort(rng.choice(eligible, size=n_cold, replace=False))
    row_of = np.full(log.n_users, -1, dtype=np.int64)
    row_of[cold_users] = np.arange(n_cold)

    in_cold = row_of[u] >= 0
    train = binary_matrix(u[~in_cold], i[~in_cold], log.shape)
    cu, ci, ct = u[in_cold], i[in_cold], t[in_cold]
    chrono = np.lexsort((ci, ct, cu))  # per user: time, then item index for equal timestamps
    cu, ci = cu[chrono], ci[chrono]
    starts = np.searchsorted(cu, cold_users)
    position = np.arange(len(cu)) - starts[row_of[cu]]
    is_known = position < n_known
    shape = (n_cold, log.n_items)
    known = binary_matrix(row_of[cu[is_known]], ci[is_known], shape)
    test = binary_matrix(row_of[cu[~is_known]], ci[~is_known], shape)
    # Known items in time order (not index order), as the user would list them.
    known_rows = row_of[cu[is_known]]  # sorted, since cu is grouped by user in cold_users order
    known_lists = np.split(ci[is_known], np.cumsum(np.bincount(known_rows, minlength=n_cold))[:-1])
    queries = [UserQuery(liked_items=items.astype(np.int64),
                         text=query_text(items) if query_text is not None else None)
               for items in known_lists]
    return ColdUserSplit(train, test, known, cold_users, queries)


def liked_items_text(data: EvalData, max_items: int = 5) -> Callable[[np.ndarray], str | None]:
    """A query-text builder that describes the liked items by title and tags (nothing else)."""

    def build(items: np.ndarray) -> str | None:
        parts: list[str] = []
        for idx in np.asarray(items)[:max_items]:
            it = data.items[int(idx)]
            parts.append(f"{it.title} ({', '.join(it.tags)})" if it.tags else it.title)
        return "I liked: " + "; ".join(parts) if parts else None

    return build


@dataclass
class ProtocolSplits:
    warm: WarmSplit | None
    cold_items: ColdItemSplit | None
    cold_users: ColdUserSplit | None


def protocol_splits(data: EvalData, log: InteractionLog, warm: WarmSplit | None = None,
                    protocols: tuple[str, ...] = ("warm", "cold_items", "cold_users"), warm_test_share: float = 0.2,
                    cold_item_share: float = 0.2, cold_user_share: float = 0.2, n_known: int = 5,
                    seed: int = 0, query_text: bool = True) -> ProtocolSplits:
    """The splits for the requested protocols; ``warm`` overrides the random per-user warm split."""
    unknown = set(protocols) - {"warm", "cold_items", "cold_users"}
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}")
    return ProtocolSplits(
        warm=(warm or random_warm_split(log, warm_test_share, seed)) if "warm" in protocols else None,
        cold_items=cold_item_split(log, cold_item_share, seed) if "cold_items" in protocols else None,
        cold_users=(cold_user_split(log, cold_user_share, n_known, seed,
                                    liked_items_text(data) if query_text else None)
                    if "cold_users" in protocols else None),
    )
