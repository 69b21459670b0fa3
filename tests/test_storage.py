"""CatalogStore behaviour, run against SQLite and a throwaway PostgreSQL alike; MediaStore."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from pg_server import postgres_server, postgres_url, store, store_url  # noqa: F401  (fixtures)

from mixrec.catalog import Interaction, Item
from mixrec.storage import (
    CatalogStore,
    DuplicateItemsError,
    MediaError,
    MediaStore,
    MediaTooLargeError,
    UnknownItemsError,
    UnsupportedMediaError,
)

REPO = Path(__file__).resolve().parent.parent


def make_items(n: int = 6) -> list[Item]:
    types = ["product", "video", "audio"]
    return [Item(item_id=f"it{i}", type=types[i % 3], title=f"Item {i}", description=f"about {i}",
                 tags=["even" if i % 2 == 0 else "odd", f"t{i}"], category="cat", image=f"img/{i}.png")
            for i in range(n)]


# ---------------------------------------------------------------- items

def test_add_get_round_trip(store):
    items = make_items()
    assert store.add_items(items) == [it.item_id for it in items]
    got = store.get_items(["it3", "missing", "it0"])
    assert got == [items[3], items[0]]


def test_duplicate_ids_are_refused_and_named(store):
    store.add_items(make_items(3))
    with pytest.raises(DuplicateItemsError) as err:
        store.add_items([Item(item_id="new", type="audio", title="N"), Item(item_id="it1", type="audio", title="X")])
    assert err.value.item_ids == ["it1"] and "it1" in str(err.value)
    assert store.get_items(["new"]) == []  # all or nothing
    with pytest.raises(DuplicateItemsError, match="'dup'"):
        store.add_items([Item(item_id="dup", type="audio", title="A"), Item(item_id="dup", type="audio", title="B")])


def test_delete_is_soft_and_an_id_can_be_added_again(store):
    store.add_items(make_items(3))
    assert store.delete_items(["it1", "nope", "it1"]) == ["it1"]
    assert store.delete_items(["it1"]) == []
    assert store.get_items(["it1"]) == []
    assert store.get_items(["it1"], include_deleted=True)[0].title == "Item 1"
    assert [it.item_id for it in store.list_items()] == ["it0", "it2"]
    revived = Item(item_id="it1", type="product", title="Back", tags=["t1", "fresh"])
    store.add_items([revived])
    assert store.get_items(["it1"]) == [revived]
    assert [it.item_id for it in store.list_items(tags=["fresh"])] == ["it1"]
    assert [(c.item_id, c.op) for c in store.catalog_changes()][-2:] == [("it1", "delete"), ("it1", "add")]
    last = store.catalog_changes()[-1].id
    assert store.catalog_changes(since_id=last) == []


def test_list_filters_and_pagination(store):
    store.add_items(make_items(9))
    all_ids = [it.item_id for it in store.list_items()]
    assert all_ids == [f"it{i}" for i in range(9)]
    assert [it.item_id for it in store.list_items(types=["video"])] == ["it1", "it4", "it7"]
    assert [it.item_id for it in store.list_items(tags=["odd"])] == ["it1", "it3", "it5", "it7"]
    assert [it.item_id for it in store.list_items(types=["video", "audio"], tags=["even"])] == ["it2", "it4", "it8"]
    assert [it.item_id for it in store.list_items(tags=["t3", "t4"])] == ["it3", "it4"]
    assert store.list_items(tags=["no-such-tag"]) == []
    pages = [store.list_items(limit=4, offset=o) for o in (0, 4, 8)]
    assert [it.item_id for p in pages for it in p] == all_ids and [len(p) for p in pages] == [4, 4, 1]
    assert store.count_items() == 9 and store.count_items(types=["audio"], tags=["even"]) == 2
    with pytest.raises(ValueError, match="limit"):
        store.list_items(limit=-1)


# ---------------------------------------------------------------- feedback and users

def test_feedback_ids_seen_items_and_incremental_reads(store):
    store.add_items(make_items(4))
    ids = store.record_feedback([Interaction("u1", "it0", "click", 1.0, 10.0),
                                 Interaction("u1", "it2", "purchase", 3.0, 11.0),
                                 Interaction("u2", "it2", "view", 0.5, 12.0)])
    assert ids == sorted(ids) and len(set(ids)) == 3
    more = store.record_feedback([Interaction("u1", "it0", "view", 1.0, 13.0)])
    assert more[0] > ids[-1]
    assert store.seen_items("u1") == {"it0", "it2"} and store.seen_items("ghost") == set()
    assert store.user_exists("u1") and store.user_exists("u2") and not store.user_exists("ghost")
    newer = store.interactions(since_id=ids[0])
    assert [e.id for e in newer] == ids[1:] + more
    assert newer[0].to_interaction() == Interaction("u1", "it2", "purchase", 3.0, 11.0)
    assert [e.id for e in store.interactions(user_id="u2")] == [ids[2]]
    assert store.record_feedback([]) == []


def test_feedback_on_unknown_or_deleted_items_stores_nothing(store):
    store.add_items(make_items(2))
    store.delete_items(["it1"])
    with pytest.raises(UnknownItemsError) as err:
        store.record_feedback([Interaction("u1", "it0"), Interaction("u1", "it1"), Interaction("u1", "zz")])
    assert err.value.item_ids == ["it1", "zz"]
    assert store.interactions() == [] and not store.user_exists("u1")
    with pytest.raises(ValueError, match="finite"):
        store.record_feedback([Interaction("u1", "it0", weight=float("nan"))])
    with pytest.raises(ValueError, match="event"):
        store.record_feedback([Interaction("u1", "it0", event="")])


def test_forget_user_removes_only_that_user(store):
    store.add_items(make_items(3))
    store.upsert_user("u1", {"lang": "en"})
    store.record_feedback([Interaction("u1", "it0"), Interaction("u1", "it1"), Interaction("u2", "it0")])
    assert store.user_profile("u1") == {"lang": "en"}
    removed = store.forget_user("u1")
    assert removed == {"interactions": 2, "users": 1, "erasure_id": removed["erasure_id"]}
    assert not store.user_exists("u1") and store.seen_items("u1") == set() and store.user_profile("u1") is None
    assert [e.user_id for e in store.interactions()] == ["u2"]
    assert store.forget_user("u1", log_always=False) == {"interactions": 0, "users": 0, "erasure_id": None}


def test_item_vectors_commit_with_their_items_and_erasure_log(store):
    import numpy as np

    items = make_items(2)
    vecs = {items[0].item_id: {"text": np.arange(4, dtype=np.float32), "image": np.ones(3, np.float32)}}
    store.add_items(items, vectors=vecs)
    got = store.get_vectors([it.item_id for it in items])
    assert set(got) == {items[0].item_id}
    assert np.array_equal(got[items[0].item_id]["text"], np.arange(4, dtype=np.float32))
    assert got[items[0].item_id]["image"].shape == (3,)
    # a refused add stores no vectors either
    with pytest.raises(DuplicateItemsError):
        store.add_items([items[1]], vectors={items[1].item_id: {"text": np.zeros(4, np.float32)}})
    assert items[1].item_id not in store.get_vectors([items[1].item_id])
    first = store.log_forgotten("u-1")
    second = store.log_forgotten("u-2")
    assert second > first
    assert store.forgotten_since(0) == [(first, "u-1"), (second, "u-2")]
    assert store.forgotten_since(first) == [(second, "u-2")]


def test_stats(store):
    store.add_items(make_items(5))
    store.delete_items(["it0"])
    ids = store.record_feedback([Interaction("u1", "it1"), Interaction("u2", "it2")])
    assert store.stats() == {"backend": store.backend, "items": 4,
                             "items_by_type": {"audio": 1, "product": 1, "video": 2},
                             "deleted_items": 1, "users": 2, "interactions": 2, "last_interaction_id": ids[-1]}


def test_second_store_on_same_database_sees_everything(store_url):
    with CatalogStore(store_url) as first:
        first.add_items(make_items(3))
        ids = first.record_feedback([Interaction(f"u{i % 4}", f"it{i % 3}", "view", 1.0, float(i))
                                     for i in range(50)])
    with CatalogStore(store_url) as second:
        assert [e.id for e in second.interactions()] == ids
        assert len(second.list_items()) == 3


def test_concurrent_writers_from_threads(store):
    store.add_items(make_items(3))
    acked: list[int] = []
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(20):
                acked.extend(store.record_feedback([Interaction(f"user{w}", f"it{i % 3}", "view", 1.0, float(i))]))
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(acked) == sorted(e.id for e in store.interactions()) and len(set(acked)) == 80
    assert store.stats()["users"] == 4


# ---------------------------------------------------------------- SQLite specifics

def test_sqlite_runs_wal_full_sync_and_foreign_keys(tmp_path):
    with CatalogStore(f"sqlite:///{tmp_path}/m.db") as s:
        with s._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_in_memory_sqlite_is_shared_across_threads():
    with CatalogStore("sqlite://") as s:
        s.add_items(make_items(2))
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(len(s.list_items())))
        t.start()
        t.join()
        assert seen == [2]


WRITER = textwrap.dedent("""
    import sys
    from mixrec.catalog import Interaction
    from mixrec.storage import CatalogStore
    store = CatalogStore(sys.argv[1])
    print("ready", flush=True)
    for i in range(20000):  # bounded: the parent kills us long before the end
        [event_id] = store.record_feedback([Interaction("u%d" % (i % 7), "it%d" % (i % 3), "view", 1.0, float(i))])
        print(event_id, flush=True)  # acknowledged: printed only after commit returned
""")


def test_acknowledged_events_survive_kill_9(tmp_path):
    url = f"sqlite:///{tmp_path}/crash.db"
    with CatalogStore(url) as s:
        s.add_items(make_items(3))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=REPO, start_new_session=True)
    acked: list[int] = []
    timer = threading.Timer(60, proc.kill)  # never hang the suite
    timer.start()
    try:
        assert proc.stdout.readline().strip() == "ready"
        while len(acked) < 40:
            line = proc.stdout.readline()
            assert line, "writer died early"
            acked.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream, while it keeps writing
        acked += [int(x) for x in proc.stdout.read().split()]  # acks printed before the kill landed
        proc.wait(timeout=10)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with CatalogStore(url) as reopened:
        stored = {e.id for e in reopened.interactions()}
    assert set(acked) <= stored
    assert len(stored) - len(acked) <= 1  # at most the one commit that landed just before the kill


# ---------------------------------------------------------------- MediaStore

def test_media_is_content_addressed_and_sniffed(tmp_path, media):
    ms = MediaStore(tmp_path / "media", max_bytes={"image": 1 << 20, "audio": 1 << 20, "video": 1 << 20})
    png, wav = media.image_bytes(), media.audio_bytes(seconds=0.1)
    a = ms.save(png)
    assert (a.kind, a.ext) == ("image", "png") and a.name == f"{a.sha256[:2]}/{a.sha256}.png"
    assert ms.save(png) == a and ms.read(a.name) == png
    assert ms.save(media.image_bytes(fmt="JPEG"), expected_kind="image").ext == "jpg"
    assert ms.save(wav, expected_kind="audio").ext == "wav"
    assert ms.save(media.audio_bytes(seconds=0.1, fmt="FLAC")).ext == "flac"
    mp4 = media.write_mp4(tmp_path / "clip.mp4", seconds=0.3)
    stored = ms.save_file(mp4, expected_kind="video")
    assert (stored.kind, stored.ext) == ("video", "mp4") and stored.path.read_bytes() == mp4.read_bytes()
    assert not list((tmp_path / "media").rglob(".upload-*"))  # no temp files left behind
    assert ms.delete(a.name) and not ms.delete(a.name)


def test_media_limits_and_refusals(tmp_path, media):
    ms = MediaStore(tmp_path / "media", max_bytes={"image": 100, "audio": 10_000, "video": 10_000})
    with pytest.raises(MediaTooLargeError, match="image upload is"):
        ms.save(media.image_bytes())
    with pytest.raises(MediaTooLargeError):
        ms.save(b"\0" * 20_000)  # over every limit: refused before sniffing
    with pytest.raises(UnsupportedMediaError, match="unrecognised"):
        ms.save(b"#!/bin/sh\nrm -rf /\n")
    with pytest.raises(UnsupportedMediaError, match="expected image data but got audio"):
        ms.save(b"RIFF\0\0\0\0WAVEfmt ", expected_kind="image")  # a WAV header, under the image limit
    assert not any(p.is_file() for p in (tmp_path / "media").rglob("*"))


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "ab/../../x.png", "",
                                  "00/" + "a" * 64 + ".png", "aa/" + "a" * 64 + ".png/../../x",
                                  "AA/" + "A" * 64 + ".png"])
def test_media_names_cannot_escape_the_root(tmp_path, name):
    ms = MediaStore(tmp_path / "media")
    with pytest.raises(MediaError, match="invalid media name"):
        ms.path(name)


def test_poller_reading_since_last_id_misses_nothing_under_concurrent_writes(store):
    """Replicas catch up with `interactions(since_id=last)`: ids must become visible in commit order."""
    store.add_items(make_items(3))
    done = threading.Event()
    polled: list[int] = []

    def poll() -> None:
        last = None
        while True:
            finished = done.is_set()
            batch = store.interactions(since_id=last)
            polled.extend(e.id for e in batch)
            last = batch[-1].id if batch else last
            if finished:
                return

    def writer(w: int) -> None:
        for i in range(15):
            store.record_feedback([Interaction(f"w{w}", f"it{i % 3}", "view", 1.0, float(i))] * 2)

    poller = threading.Thread(target=poll)
    poller.start()
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=60)
    done.set()
    poller.join(timeout=60)
    assert sorted(polled) == [e.id for e in store.interactions()] and len(polled) == 90
