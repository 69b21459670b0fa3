"""Regression tests for the trust defects an attack run found in the engine (in-process, two "workers").

Two ``RecommenderEngine`` objects on one database and one state directory stand for two
Recommender workers (``serving.workers: 2``): each has its own in-memory model and syncs
from the database, as the served workers do. The served two-worker case is in
tests/test_multiworker_e2e.py.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest

from mixrec.catalog import Interaction, Item, read_interactions, read_items
from mixrec.errors import ServerError
from server_harness import engine_config
from services.engine import Options, RecommenderEngine


def _cfg(tiny_demo, tmp_path, **serving):
    return engine_config(tiny_demo.artifacts_dir, tmp_path, **serving)


@pytest.fixture(scope="module")
def demo_data(tiny_demo):
    return read_items(tiny_demo.data_dir), read_interactions(tiny_demo.data_dir)


@pytest.fixture
def two_workers(tiny_demo, tmp_path):
    cfg = _cfg(tiny_demo, tmp_path)
    a = RecommenderEngine.open(cfg, start_background=False)
    b = RecommenderEngine.open(cfg, start_background=False)
    yield a, b
    a.close()
    b.close()


def _vectors(engine, item_id: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=engine.model.space.dims["text"]).astype(np.float32)
    return {item_id: {"text": v / np.linalg.norm(v)}}


def _item(item_id: str, title: str) -> Item:
    return Item(item_id=item_id, type="product", title=title, tags=["trust"])


def _busiest_user(inter) -> str:
    return Counter(i.user_id for i in inter).most_common(1)[0][0]


# ---------------------------------------------------------------- 1. ids never reused after forget_user

def test_feedback_after_forgetting_the_newest_user_is_applied(two_workers, demo_data):
    a, _ = two_workers
    items, _ = demo_data
    ids = [it.item_id for it in items[:3]]
    first = a.feedback([Interaction("ghost-a", ids[0], "like", 1.0, 1.0), Interaction("ghost-a", ids[1], "like", 1.0, 2.0)])
    a.forget_user("ghost-a")
    again = a.feedback([Interaction("ghost-b", ids[2], "like", 1.0, 3.0)])
    assert again["event_ids"][0] > max(first["event_ids"]), (first, again)
    out = a.recommend("ghost-b", Options(k=3, explain=False))  # 404 forever when the id was reused
    assert len(out["items"]) == 3


# ---------------------------------------------------------------- 2. delete + re-add in one sync window

def test_delete_then_readd_in_one_window_reaches_the_other_worker(two_workers):
    a, b = two_workers
    a.add_items([_item("trust-1", "First version")], _vectors(a, "trust-1"))
    b.sync()
    assert "trust-1" in b.model.item_index()
    a.delete_items(["trust-1"])
    a.add_items([_item("trust-1", "Second version")], _vectors(a, "trust-1", seed=1))
    b.sync()  # one window: the delete and the re-add arrive together
    assert "trust-1" in b.model.item_index(), "the polling worker lost an item the database has live"
    row = b.model.item_index()["trust-1"]
    assert b.model.items[row].title == "Second version"
    # The item can still be repaired through the API: deleting and re-adding works on either worker.
    b.delete_items(["trust-1"])
    a.sync()
    assert "trust-1" not in a.model.item_index()


def test_readd_on_a_worker_that_has_not_seen_the_delete_is_not_a_conflict(two_workers):
    a, b = two_workers
    a.add_items([_item("trust-2", "Lamp")], _vectors(a, "trust-2"))
    b.sync()
    a.delete_items(["trust-2"])
    # b has not synced: its in-memory model still holds trust-2, the database does not.
    out = b.add_items([_item("trust-2", "Lamp, again")], _vectors(b, "trust-2", seed=2))
    assert out["added"] == ["trust-2"]
    a.sync()
    for eng in (a, b):
        row = eng.model.item_index()["trust-2"]
        assert eng.model.items[row].title == "Lamp, again"


# ---------------------------------------------------------------- 3. checkpoints and update failures

def test_concurrent_checkpoints_of_two_workers_never_fail(two_workers, demo_data, tiny_demo, tmp_path):
    a, b = two_workers
    _, inter = demo_data
    users = list(dict.fromkeys(i.user_id for i in inter))[:6]
    errors: list[BaseException] = []

    def work(eng, mine):
        try:
            for u in mine:
                eng.forget_user(u)
                eng.update_model(wait=True, epochs=1)
                eng.checkpoint()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(a, users[0::2])), threading.Thread(target=work, args=(b, users[1::2]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    state = tmp_path / "state"
    assert (state / "checkpoint.json").exists()
    assert len([p for p in state.iterdir() if p.name.startswith("model-")]) == 1
    again = RecommenderEngine.open(_cfg(tiny_demo, tmp_path), start_background=False)
    try:
        for u in users:
            assert u not in again.model.snapshot.user_index
    finally:
        again.close()


def test_a_failed_update_is_reported_to_the_caller_that_waited(two_workers, monkeypatch):
    a, _ = two_workers

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(a.model, "fit_partial", boom)
    with pytest.raises(ServerError, match="model update failed: RuntimeError: disk full"):
        a.update_model(wait=True)
    assert a.updates_done == 0


def test_a_committed_write_is_answered_even_when_applying_it_fails(two_workers, demo_data, monkeypatch):
    a, b = two_workers
    _, inter = demo_data
    user = _busiest_user(inter)

    def broken_checkpoint():
        raise FileNotFoundError("model.tmp/meta.json")

    monkeypatch.setattr(a, "checkpoint", broken_checkpoint)
    out = a.forget_user(user)  # used to surface as a 500 although the erasure had committed
    assert out["applied"] is False and out["user_id"] == user
    b.sync()
    assert user not in b.model.snapshot.user_index


def test_a_checkpoint_from_another_database_is_not_trusted(tiny_demo, tmp_path, demo_data):
    items, _ = demo_data
    cfg = _cfg(tiny_demo, tmp_path)
    eng = RecommenderEngine.open(cfg, start_background=False)
    eng.feedback([Interaction("late-user", items[0].item_id, "like", 1.0, 1.0)] * 3)
    eng.checkpoint()
    eng.close()
    (tmp_path / "db.sqlite").unlink()  # the database is replaced; the state directory stays
    fresh = RecommenderEngine.open(cfg, start_background=False)
    try:
        assert fresh.event_mark == 0  # not the old database's watermark, which would skip new events
        out = fresh.feedback([Interaction("new-user", items[1].item_id, "like", 1.0, 1.0)])
        assert out["applied"] is True
        assert "new-user" in fresh.model.snapshot.user_index
    finally:
        fresh.close()


# ---------------------------------------------------------------- 4. erasure and events in one window

def test_events_after_an_erasure_survive_the_other_workers_sync(two_workers, demo_data):
    a, b = two_workers
    items, _ = demo_data
    ids = [it.item_id for it in items[:4]]
    a.feedback([Interaction("comeback", ids[0], "like", 1.0, 1.0)])
    b.sync()
    a.forget_user("comeback")
    a.feedback([Interaction("comeback", ids[1], "like", 1.0, 2.0)])  # came back after the erasure
    b.sync()  # sees the erasure and the new event in one window
    row = b.model.positives.get("comeback", {})
    assert set(row) == {ids[1]}, row


# ---------------------------------------------------------------- 5. event semantics

def test_a_dislike_never_counts_as_a_like_and_pushes_the_item_out(two_workers, demo_data):
    a, _ = two_workers
    _, inter = demo_data
    user = _busiest_user(inter)
    top = a.recommend(user, Options(k=3, explain=False), exclude_seen=False)["items"][0]["item_id"]
    a.feedback([Interaction(user, top, "dislike", 1.0, 10.0)])
    assert top not in a.model.positives.get(user, {})
    again = a.recommend(user, Options(k=10, explain=False), exclude_seen=False)
    assert top not in {r["item_id"] for r in again["items"]}

    a.feedback([Interaction("only-dislikes", top, "dislike", 5.0, 11.0)])
    assert not a.model.positives.get("only-dislikes")


def test_event_types_are_configuration(tiny_demo, tmp_path, demo_data):
    from mixrec.errors import InputError

    items, _ = demo_data
    env_cfg = _cfg(tiny_demo, tmp_path)
    cfg = env_cfg.model_copy(update={"events": {**env_cfg.events, "skip": env_cfg.events["dislike"],
                                                "impression": env_cfg.events["view"].model_copy(
                                                    update={"role": "seen"})}})
    eng = RecommenderEngine.open(cfg, start_background=False)
    try:
        eng.feedback([Interaction("cfg-user", items[0].item_id, "impression", 1.0, 1.0)])
        assert "cfg-user" not in eng.model.positives  # seen only: nothing learned
        eng.feedback([Interaction("cfg-user", items[1].item_id, "like", 2.0, 2.0),
                      Interaction("cfg-user", items[1].item_id, "skip", 2.0, 3.0)])
        assert items[1].item_id not in eng.model.positives["cfg-user"]
        with pytest.raises(InputError, match="unknown event type"):
            eng.feedback([Interaction("cfg-user", items[2].item_id, "teleport", 1.0, 4.0)])
    finally:
        eng.close()


def test_training_applies_the_same_event_semantics(tiny_demo, demo_data):
    from fusion.hybrid import HybridModel

    items, inter = demo_data
    user = inter[0].user_id
    liked = [i for i in inter if i.user_id == user][0].item_id
    model = HybridModel.load(tiny_demo.artifacts_dir)
    model.add_interactions([Interaction(user, liked, "dislike", 100.0, 1e9)])
    assert liked not in model.positives[user]


def test_a_checkpoint_written_while_another_worker_writes_one_is_not_torn(two_workers):
    """Deterministic version of the race: worker b checkpoints while worker a is half-way through its save."""
    a, b = two_workers
    real_save = a.model.save

    def save_with_a_concurrent_writer(directory):
        real_save(directory)
        other = threading.Thread(target=b.checkpoint)
        other.start()
        other.join(timeout=3)  # the old code let b remove a's half-written directory here
        a.model.__dict__.pop("save", None)
        save_with_a_concurrent_writer.other = other

    a.model.save = save_with_a_concurrent_writer
    a.checkpoint()
    save_with_a_concurrent_writer.other.join(timeout=60)
    pointer = (a.checkpoints.path / "checkpoint.json")
    assert pointer.exists()
    import json

    target = a.checkpoints.path / json.loads(pointer.read_text())["dir"]
    assert (target / "meta.json").exists(), sorted(p.name for p in a.checkpoints.path.iterdir())
