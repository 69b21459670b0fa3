"""CatalogStore ids as watermarks: never reused, database identity, high-water marks, schema migration,
the one-transaction erasure, events by role and typed input errors. SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import sqlite3
import uuid

import pytest
from pg_server import postgres_server, postgres_url, store, store_url  # noqa: F401  (fixtures)
from sqlalchemy import MetaData, event, text

from mixrec.catalog import Interaction, Item
from mixrec.errors import ECHO_CHARS, InputError
from mixrec.storage import CatalogStore
from mixrec.storage.models import Base, ForgottenUserRow
from mixrec.storage.store import SCHEMA_VERSION


def make_items(n: int = 3) -> list[Item]:
    return [Item(item_id=f"it{i}", type="video", title=f"Item {i}") for i in range(n)]


def _sql(store: CatalogStore, statement: str, **params) -> None:
    with store._engine.begin() as conn:
        conn.execute(text(statement), params)


# ---------------------------------------------------------------- ids are never reused

def test_interaction_ids_are_not_reused_after_the_newest_rows_are_forgotten(store):
    store.add_items(make_items())
    assert store.record_feedback([Interaction("ghost-a", "it0"), Interaction("ghost-a", "it1")]) == [1, 2]
    store.forget_user("ghost-a")
    assert store.record_feedback([Interaction("ghost-b", "it0")]) == [3]  # not 1: a poller is already past 1


def test_no_watermark_log_reuses_ids_after_deletes(store):
    """Every id-ordered log: delete its newest rows (a prune), write again, the new id is still larger."""
    store.add_items(make_items(2))
    last_change = store.catalog_changes()[-1].id
    _sql(store, "DELETE FROM catalog_changes")
    store.delete_items(["it0"])
    assert store.catalog_changes()[-1].id == last_change + 1

    first = store.log_forgotten("u-1")
    _sql(store, "DELETE FROM forgotten_users")
    assert store.forget_user("u-2")["erasure_id"] == first + 1

    [event_id] = store.record_feedback([Interaction("u", "it1")])
    _sql(store, "DELETE FROM interactions")
    assert store.record_feedback([Interaction("u", "it1")]) == [event_id + 1]


# ---------------------------------------------------------------- identity and high-water marks

def test_high_water_marks_count_every_id_ever_issued(store):
    assert store.high_water_marks() == {"events": 0, "changes": 0, "forgotten": 0}  # never-used sequences: 0
    store.add_items(make_items(3))
    ids = store.record_feedback([Interaction("gone", "it0"), Interaction("gone", "it1")])
    erased = store.forget_user("gone")["erasure_id"]
    assert store.interactions() == []  # max(id) would now say 0
    assert store.high_water_marks() == {"events": ids[-1], "changes": 3, "forgotten": erased}
    _sql(store, "DELETE FROM catalog_changes")
    _sql(store, "DELETE FROM forgotten_users")
    assert store.high_water_marks() == {"events": ids[-1], "changes": 3, "forgotten": erased}
    with CatalogStore(store.url, create=False) as other:
        assert other.high_water_marks() == store.high_water_marks()


def test_database_id_is_a_stable_uuid_shared_by_every_store_on_the_database(store_url, tmp_path):
    with CatalogStore(store_url) as first:
        db_id = first.database_id
        assert str(uuid.UUID(db_id)) == db_id
    with CatalogStore(store_url) as again, CatalogStore(store_url, create=False) as replica:
        assert again.database_id == db_id and replica.database_id == db_id
    with CatalogStore(f"sqlite:///{tmp_path}/other.db") as other:
        assert other.database_id != db_id


# ---------------------------------------------------------------- forget_user: one transaction

def test_forget_user_logs_the_erasure_in_its_own_transaction(store):
    store.add_items(make_items(2))
    store.upsert_user("u1", {"lang": "en"})
    store.record_feedback([Interaction("u1", "it0"), Interaction("u1", "it1"), Interaction("u2", "it0")])
    removed = store.forget_user("u1")
    assert removed == {"interactions": 2, "users": 1, "erasure_id": removed["erasure_id"]}
    assert store.forgotten_since(0) == [(removed["erasure_id"], "u1")]
    assert [e.user_id for e in store.interactions()] == ["u2"] and not store.user_exists("u1")
    # a user only the trained model knows: nothing in the database, logged all the same by default
    model_only = store.forget_user("model-only")
    assert model_only["interactions"] == model_only["users"] == 0 and model_only["erasure_id"] > removed["erasure_id"]
    assert store.forget_user("nobody", log_always=False) == {"interactions": 0, "users": 0, "erasure_id": None}
    assert [u for _, u in store.forgotten_since(0)] == ["u1", "model-only"]
    assert store.forget_user("u2", log_always=False)["erasure_id"] is not None  # rows went: always logged


def test_forget_user_is_atomic_when_the_erasure_log_write_fails(store):
    store.add_items(make_items(2))
    ids = store.record_feedback([Interaction("u1", "it0"), Interaction("u1", "it1")])

    def refuse(*_args):
        raise RuntimeError("erasure log unavailable")

    event.listen(ForgottenUserRow, "before_insert", refuse)
    try:
        with pytest.raises(RuntimeError, match="erasure log unavailable"):
            store.forget_user("u1")
    finally:
        event.remove(ForgottenUserRow, "before_insert", refuse)
    assert [e.id for e in store.interactions(user_id="u1")] == ids and store.user_exists("u1")
    assert store.forgotten_since(0) == []


# ---------------------------------------------------------------- events by role

def test_user_items_filters_by_event_names(store):
    store.add_items(make_items(4))
    store.record_feedback([Interaction("u", "it0", "like"), Interaction("u", "it1", "dislike"),
                           Interaction("u", "it2", "skip"), Interaction("u", "it1", "view"),
                           Interaction("v", "it3", "dislike")])
    assert store.user_items("u") == {"it0", "it1", "it2"} == store.seen_items("u")
    assert store.user_items("u", ["dislike"]) == {"it1"}
    assert store.user_items("u", ("dislike", "skip")) == {"it1", "it2"}
    assert store.user_items("u", "dislike") == {"it1"}  # one name, not its characters
    assert store.user_items("u", []) == set() and store.user_items("ghost", ["like"]) == set()


# ---------------------------------------------------------------- typed, bounded input errors

def test_bad_feedback_and_paging_are_input_errors_with_bounded_messages(store):
    store.add_items(make_items(1))
    huge = "e" * 100_000
    for bad in (Interaction("u", "it0", event=huge), Interaction("u", "it0", event=""),
                Interaction("", "it0"), Interaction("u" * 100_000, "it0"),
                Interaction("u", "it0", weight=float("inf"))):
        with pytest.raises(InputError) as err:
            store.record_feedback([bad])
        assert err.value.status == 400 and len(str(err.value)) < 4 * ECHO_CHARS + 200
    with pytest.raises(InputError, match="limit"):
        store.list_items(limit=-1)
    assert store.interactions() == []


# ---------------------------------------------------------------- migrating version-1 databases

# The SQLite schema as CatalogStore created it before schema version 2 (no AUTOINCREMENT, no mixrec_meta).
V1_SQLITE_DDL = """
CREATE TABLE items (
    id VARCHAR(200) NOT NULL, type VARCHAR(16) NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
    tags JSON NOT NULL, category VARCHAR(200), image TEXT, audio TEXT, video TEXT,
    created_at DATETIME NOT NULL, deleted_at DATETIME, PRIMARY KEY (id));
CREATE INDEX ix_items_deleted_at ON items (deleted_at);
CREATE INDEX ix_items_created_at ON items (created_at);
CREATE INDEX ix_items_type ON items (type);
CREATE TABLE catalog_changes (
    id INTEGER NOT NULL, item_id VARCHAR(200) NOT NULL, op VARCHAR(8) NOT NULL, created_at DATETIME NOT NULL,
    PRIMARY KEY (id));
CREATE INDEX ix_catalog_changes_item_id ON catalog_changes (item_id);
CREATE TABLE users (id VARCHAR(200) NOT NULL, created_at DATETIME NOT NULL, profile JSON, PRIMARY KEY (id));
CREATE TABLE item_vectors (
    item_id VARCHAR(200) NOT NULL, modality VARCHAR(16) NOT NULL, dim INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (item_id, modality));
CREATE TABLE forgotten_users (
    id INTEGER NOT NULL, user_id VARCHAR(200) NOT NULL, at DATETIME NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_forgotten_users_user_id ON forgotten_users (user_id);
CREATE TABLE item_tags (
    item_id VARCHAR(200) NOT NULL, tag VARCHAR(200) NOT NULL, PRIMARY KEY (item_id, tag),
    FOREIGN KEY(item_id) REFERENCES items (id) ON DELETE CASCADE);
CREATE INDEX ix_item_tags_tag ON item_tags (tag);
CREATE TABLE interactions (
    id INTEGER NOT NULL, user_id VARCHAR(200) NOT NULL, item_id VARCHAR(200) NOT NULL, event VARCHAR(32) NOT NULL,
    weight FLOAT NOT NULL, timestamp FLOAT NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE, FOREIGN KEY(item_id) REFERENCES items (id));
CREATE INDEX ix_interactions_user_item ON interactions (user_id, item_id);
CREATE INDEX ix_interactions_item_id ON interactions (item_id);
"""
NOW = "2024-01-02 03:04:05.000000"


def _v1_sqlite_database(path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SQLITE_DDL)
    conn.executemany("INSERT INTO items (id, type, title, description, tags, created_at) VALUES (?, 'video', ?, '', "
                     "'[]', ?)", [(f"it{i}", f"Item {i}", NOW) for i in range(3)])
    conn.executemany("INSERT INTO catalog_changes (id, item_id, op, created_at) VALUES (?, ?, 'add', ?)",
                     [(i + 1, f"it{i}", NOW) for i in range(3)])
    conn.executemany("INSERT INTO users (id, created_at) VALUES (?, ?)", [("keep", NOW), ("gone", NOW)])
    conn.executemany("INSERT INTO interactions (id, user_id, item_id, event, weight, timestamp, created_at) "
                     "VALUES (?, ?, ?, 'view', 1.0, ?, ?)",
                     [(1, "keep", "it0", 1.0, NOW), (2, "keep", "it1", 2.0, NOW), (3, "gone", "it2", 3.0, NOW),
                      (4, "gone", "it0", 4.0, NOW)])
    conn.execute("INSERT INTO forgotten_users (id, user_id, at) VALUES (1, 'old-ghost', ?)", (NOW,))
    conn.commit()
    conn.close()


def _schema(path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return {name: sql for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
    finally:
        conn.close()


def test_a_version_1_sqlite_database_is_migrated_on_open(tmp_path, caplog):
    path = tmp_path / "v1.db"
    _v1_sqlite_database(path)
    before = _schema(path)
    assert "AUTOINCREMENT" not in before["interactions"]
    url = f"sqlite:///{path}"
    with caplog.at_level(logging.INFO, logger="mixrec.storage"):
        store = CatalogStore(url)
    try:
        assert "rebuilt SQLite table interactions with AUTOINCREMENT" in caplog.text
        assert "schema version 1 -> 2" in caplog.text
        after = _schema(path)
        for table in ("interactions", "catalog_changes", "forgotten_users"):
            assert "AUTOINCREMENT" in after[table].upper()
        assert {n for n in before if n.startswith("ix_")} <= set(after)  # every index is back
        assert not [n for n in after if n.startswith("_mixrec_new_")]
        # rows and ids survive
        assert [(e.id, e.user_id, e.item_id, e.timestamp) for e in store.interactions()] == [
            (1, "keep", "it0", 1.0), (2, "keep", "it1", 2.0), (3, "gone", "it2", 3.0), (4, "gone", "it0", 4.0)]
        assert [(c.id, c.item_id) for c in store.catalog_changes()] == [(1, "it0"), (2, "it1"), (3, "it2")]
        assert store.forgotten_since(0) == [(1, "old-ghost")]
        assert store.high_water_marks() == {"events": 4, "changes": 3, "forgotten": 1}
        db_id = store.database_id
        # delete the newest rows, insert again: the ids go on from 4, they are not handed out twice
        assert store.forget_user("gone") == {"interactions": 2, "users": 1, "erasure_id": 2}
        assert store.record_feedback([Interaction("new", "it1")]) == [5]
        store.delete_items(["it2"])
        assert store.catalog_changes(since_id=3)[0].id == 4
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mixrec.storage"), CatalogStore(url) as again:  # idempotent
        assert again.database_id == db_id
        assert [e.id for e in again.interactions()] == [1, 2, 5]
    assert "storage migration" not in caplog.text
    assert _schema(path) == after  # the second open changed nothing


def _legacy_metadata() -> MetaData:
    """Today's tables as the version-1 models declared them: no AUTOINCREMENT, no mixrec_meta."""
    md = MetaData()
    for table in Base.metadata.sorted_tables:
        if table.name == "mixrec_meta":
            continue
        copy = table.to_metadata(md)
        copy.dialect_kwargs["sqlite_autoincrement"] = False
    return md


def test_a_version_1_database_gains_meta_and_keeps_its_ids_on_either_backend(store_url):
    with CatalogStore(store_url, create=False) as raw:
        with raw._engine.begin() as conn:
            _legacy_metadata().create_all(conn)
        _sql(raw, "INSERT INTO items (id, type, title, description, tags, created_at) "
                  "VALUES ('it0', 'video', 'I', '', '[]', CURRENT_TIMESTAMP)")
        _sql(raw, "INSERT INTO users (id, created_at) VALUES ('u', CURRENT_TIMESTAMP)")
        for ts in (1.0, 2.0):
            _sql(raw, "INSERT INTO interactions (user_id, item_id, event, weight, timestamp, created_at) "
                      "VALUES ('u', 'it0', 'view', 1.0, :ts, CURRENT_TIMESTAMP)", ts=ts)
    with CatalogStore(store_url) as store:
        with store._engine.connect() as conn:
            meta = dict(conn.execute(text("SELECT key, value FROM mixrec_meta")).all())
        assert meta == {"schema_version": str(SCHEMA_VERSION), "database_id": store.database_id}
        assert [e.id for e in store.interactions()] == [1, 2]
        store.forget_user("u")
        assert store.record_feedback([Interaction("v", "it0")]) == [3]
