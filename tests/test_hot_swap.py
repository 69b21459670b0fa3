"""Hot swap of published model versions across replicas (services/hot_swap.py), in-process.

Two ``RecommenderEngine`` replicas, each with its own state directory (its own host), share one
database and one model channel: one trains and publishes, the other swaps the version in. The served
rehearsal (tests/test_rehearsal_e2e.py) does the same across processes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from mixrec.catalog import Interaction, Item, read_interactions, read_items
from server_harness import engine_config
from services.engine import Options, RecommenderEngine


def _replica(tiny_demo, root, name: str) -> RecommenderEngine:
    cfg = engine_config(tiny_demo.artifacts_dir, root / name, model_channel=root / "channel")
    shared = cfg.storage.model_copy(update={"url": f"sqlite:///{root / 'db.sqlite'}"})
    return RecommenderEngine.open(cfg.model_copy(update={"storage": shared}), start_background=False)


@pytest.fixture
def replicas(tiny_demo, tmp_path):
    a = _replica(tiny_demo, tmp_path, "a")
    b = _replica(tiny_demo, tmp_path, "b")
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def users(tiny_demo):
    return [u for u, _ in Counter(i.user_id for i in read_interactions(tiny_demo.data_dir)).most_common(3)]


@pytest.fixture(scope="module")
def items(tiny_demo):
    return [it.item_id for it in read_items(tiny_demo.data_dir)]


def _feedback(engine, user: str, item_ids, t0: float = 1e9) -> None:
    engine.feedback([Interaction(user, i, "like", 1.0, t0 + n) for n, i in enumerate(item_ids)])


def _top(engine, user: str) -> list[tuple[str, float]]:
    return [(r["item_id"], r["score"]) for r in engine.recommend(user, Options(k=5, explain=False))["items"]]


def test_a_published_update_is_swapped_in_and_both_replicas_answer_alike(replicas, users, items):
    a, b = replicas
    _feedback(a, users[0], items[:6])
    _feedback(b, users[1], items[6:12])
    a.sync(), b.sync()
    before = _top(b, users[0])
    a.update_model(wait=True, epochs=3)
    assert a.model_version is not None and a.model_channel.publishes == 1
    assert b.model_version is None
    assert b.model_channel.follow() is True
    assert b.model_version == a.model_version
    assert b.trained_mark == a.trained_mark and b.event_mark == a.event_mark
    for u in users[:2]:
        assert _top(b, u) == _top(a, u)
    assert _top(b, users[0]) != before  # the swap changed what b serves: it is the trained model
    assert b.model_channel.follow() is False  # nothing newer


def test_rows_committed_after_the_version_are_replayed_before_the_swap(replicas, users, items):
    a, b = replicas
    _feedback(a, users[0], items[:4])
    a.update_model(wait=True, epochs=2)
    # After the publish: an erasure, a delete and an add that the published version does not hold.
    a.forget_user(users[0])
    a.delete_items([items[5]])
    v = np.random.default_rng(0).normal(size=a.model.space.dims["text"]).astype(np.float32)
    a.add_items([Item(item_id="hs-new", type="product", title="Swapped lamp", tags=["x"])],
                {"hs-new": {"text": v / np.linalg.norm(v)}})
    seen: list[str] = []
    original = b.replica.adopt  # the channel swaps models into the replica

    def adopt_and_look(model, marks):  # what the model swapped in holds at the moment it is swapped in
        original(model, marks)
        seen.append(b.model.snapshot.user_index.get(users[0]))

    b.replica.adopt = adopt_and_look
    assert b.model_channel.follow()
    assert seen == [None], "the swapped-in model held an erased user"
    index = b.model.item_index()
    assert "hs-new" in index and items[5] not in index
    with pytest.raises(Exception, match="unknown user"):
        b.recommend(users[0], Options(k=3))


def test_requests_keep_succeeding_while_versions_are_swapped(replicas, users, items):
    a, b = replicas
    _feedback(a, users[0], items[:6])
    b.sync()
    stop, answered, failed = threading.Event(), [], []

    def traffic():
        while not stop.is_set():
            try:
                answered.append(len(b.recommend(users[0], Options(k=5))["items"]))
            except Exception as e:  # noqa: BLE001 - every failure is the test's finding
                failed.append(repr(e))

    threads = [threading.Thread(target=traffic) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for n in range(3):
            _feedback(a, users[1], items[n * 3:n * 3 + 3], t0=2e9 + n * 10)
            a.update_model(wait=True, epochs=1)
            assert b.model_channel.follow()
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failed, failed[:3]
    assert b.model_channel.swaps == 3 and len(answered) > 0 and set(answered) == {5}


def test_a_new_replica_starts_from_the_newest_published_version(tiny_demo, tmp_path, users, items):
    a = _replica(tiny_demo, tmp_path, "a")
    try:
        _feedback(a, users[0], items[:5])
        a.update_model(wait=True, epochs=2)
        _feedback(a, users[1], items[5:8])  # after the version: replayed by the newcomer
        late = _replica(tiny_demo, tmp_path, "late")
        try:
            assert late.model_version == a.model_version
            assert late.event_mark == a.event_mark
            assert _top(late, users[0]) == _top(a, users[0])
            assert _top(late, users[1]) == _top(a, users[1])
        finally:
            late.close()
    finally:
        a.close()
