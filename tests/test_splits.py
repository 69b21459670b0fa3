"""Warm, cold-item and cold-user splits: shapes, disjointness, determinism, no test leakage."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mixrec.catalog import Item
from tools.evaluation.protocol import EvalData
from tools.evaluation.splits import (
    InteractionLog, cold_item_split, cold_user_split, liked_items_text, protocol_splits, random_warm_split,
    warm_split,
)


def random_log(n_users: int = 30, n_items: int = 40, per_user: int = 12, seed: int = 0) -> InteractionLog:
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        users += [u] * per_user
        items += chosen.tolist()
        ts += rng.permutation(per_user).astype(float).tolist()  # distinct times per user
    return InteractionLog(np.array(users), np.array(items), np.array(ts), n_users, n_items)


def pairs(m: sp.csr_matrix) -> set[tuple[int, int]]:
    coo = m.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


def test_warm_split_drops_test_pairs_seen_in_train() -> None:
    train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0]], dtype=np.float32))
    split = warm_split(train, test)
    assert pairs(split.test) == {(0, 2), (1, 0)}


def test_random_warm_split_partitions_each_user() -> None:
    log = random_log()
    a, b = random_warm_split(log, 0.25, seed=1), random_warm_split(log, 0.25, seed=1)
    assert pairs(a.train) | pairs(a.test) == pairs(log.matrix())
    assert not pairs(a.train) & pairs(a.test)
    assert (a.test.getnnz(axis=1) == 3).all()  # floor(12 * 0.25)
    assert pairs(a.test) == pairs(b.test)
    assert pairs(a.test) != pairs(random_warm_split(log, 0.25, seed=2).test)


def test_cold_item_split_moves_every_interaction_of_cold_items() -> None:
    log = random_log()
    split = cold_item_split(log, 0.25, seed=0)
    assert len(split.cold_items) == 10
    assert split.train[:, split.cold_items].nnz == 0
    warm_items = np.setdiff1d(np.arange(log.n_items), split.cold_items)
    assert split.test[:, warm_items].nnz == 0
    assert pairs(split.train) | pairs(split.test) == pairs(log.matrix())
    assert split.candidates.sum() == 10 and split.candidates[split.cold_items].all()
    assert (cold_item_split(log, 0.25, seed=0).cold_items == split.cold_items).all()


def test_cold_user_split_knows_only_the_earliest_items() -> None:
    log = random_log()
    split = cold_user_split(log, share=0.2, n_known=5, seed=0)
    assert len(split.cold_users) == 6
    assert split.train[split.cold_users].nnz == 0
    full = log.matrix()
    for row, user in enumerate(split.cold_users):
        mine = log.users == user
        by_time = log.items[mine][np.argsort(log.timestamps[mine])]
        q = split.queries[row]
        assert q.liked_items.tolist() == by_time[:5].tolist()  # earliest 5, in time order
        assert set(split.known[row].indices) == set(by_time[:5])
        assert set(split.test[row].indices) == set(by_time[5:])
        assert set(split.test[row].indices) | set(q.liked_items) == set(full[user].indices)
    warm_users = np.setdiff1d(np.arange(log.n_users), split.cold_users)
    assert split.train.nnz == full[warm_users].nnz
    assert (split.train[warm_users] != full[warm_users]).nnz == 0


def test_cold_user_query_text_comes_from_known_items_only() -> None:
    log = random_log(n_items=40)
    items = [Item(item_id=str(i), type="video", title=f"movie{i}", tags=[f"g{i % 3}"]) for i in range(40)]
    data = EvalData([str(u) for u in range(30)], [str(i) for i in range(40)], items)
    split = cold_user_split(log, 0.2, 5, seed=0, query_text=liked_items_text(data))
    for row, q in enumerate(split.queries):
        assert q.text is not None
        for i in split.test[row].indices:
            assert f"movie{i} (" not in q.text  # nothing from the test set shapes the query
        for i in q.liked_items:
            assert f"movie{i} (g{i % 3})" in q.text


def test_cold_user_split_breaks_equal_timestamps_by_item_index() -> None:
    log = InteractionLog(np.zeros(8, int), np.array([7, 3, 5, 1, 6, 0, 2, 4]), np.zeros(8), 2, 8)
    log = InteractionLog(np.r_[log.users, np.ones(8, int)], np.r_[log.items, np.arange(8)], np.zeros(16), 2, 8)
    split = cold_user_split(log, 0.5, n_known=3, seed=0)
    assert split.queries[0].liked_items.tolist() == [0, 1, 2]


def test_users_with_too_few_interactions_are_never_cold() -> None:
    log = InteractionLog(np.array([0, 0, 1, 1, 1, 1]), np.array([0, 1, 0, 1, 2, 3]), np.arange(6.0), 2, 4)
    split = cold_user_split(log, 0.5, n_known=2, seed=0)
    assert split.cold_users.tolist() == [1]
    with pytest.raises(ValueError, match="more than 5"):
        cold_user_split(log, 0.5, n_known=5)


def test_protocol_splits_builds_only_what_is_asked() -> None:
    log = random_log()
    data = EvalData([str(u) for u in range(30)], [str(i) for i in range(40)],
                    [Item(item_id=str(i), type="product", title=f"p{i}") for i in range(40)])
    s = protocol_splits(data, log, protocols=("cold_items",))
    assert s.warm is None and s.cold_users is None and s.cold_items is not None
    with pytest.raises(ValueError, match="unknown protocols"):
        protocol_splits(data, log, protocols=("hot",))
