"""CatalogStore: the durable catalog, users and feedback behind the Recommender service.

SQLite (a file, the default) or PostgreSQL (``postgresql+psycopg://…``, pooled) by URL.
Every method opens its own session, so one store is safe to share between the
threads of a BentoML worker; several processes / replicas may share one database.

Durability: a method that writes returns only after its transaction committed.
On SQLite the store runs WAL with ``synchronous=FULL``: the WAL is fsynced at
every commit, so an acknowledged event survives kill -9 *and* an OS crash or power
loss. (``NORMAL`` with WAL would survive kill -9 only — the commit then sits in the
OS page cache — and could lose the last acknowledged events on power loss, which an
"acknowledged only once durable" API must not do.) PostgreSQL's default
``synchronous_commit=on`` gives the same guarantee.

Watermarks: ``interactions``, ``catalog_changes`` and ``forgotten_users`` are polled with
``id > last_seen``. Their ids are issued in commit order (writers of a log hold its PostgreSQL
advisory lock; SQLite has one writer at a time) and never reused, even after deletes
(AUTOINCREMENT on SQLite, a sequence on PostgreSQL). ``database_id`` and
``high_water_marks()`` let a reader check that a saved watermark belongs to this database
and is not beyond what it ever issued.

Schema versions live in ``mixrec_meta``; ``create_schema`` (run on open) migrates older
databases in one transaction. Version 1 (no ``mixrec_meta``) had plain ``INTEGER PRIMARY
KEY`` logs on SQLite, which reuse the ids of deleted newest rows; version 2 rebuilds them
with AUTOINCREMENT.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (Connection, Engine, MetaData, Table, create_engine, delete, event, func, inspect, select,
                        text, update)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateTable

from mixrec.catalog import Interaction, Item
from mixrec.errors import InputError, shown
from mixrec.storage.errors import DuplicateItemsError, SchemaError, UnknownItemsError
from mixrec.storage.models import (
    ID_LEN,
    ID_LOGS,
    Base,
    CatalogChangeRow,
    ForgottenUserRow,
    InteractionRow,
    ItemRow,
    ItemTagRow,
    ItemVectorRow,
    MetaRow,
    UserRow,
    utcnow,
)

log = logging.getLogger("mixrec.storage")

_IN_CHUNK = 500  # ids per IN (...) clause, well under SQLite's and PostgreSQL's bound-parameter limits
_MAX_EVENT_LEN = 32
# PostgreSQL advisory-lock keys. Writers of an id-ordered log take its lock for the transaction,
# so ids become visible in commit order and a poller reading "id > last_seen" never skips one.
# A transaction that needs several takes them in ascending key order (no lock-order deadlocks).
_LOCK_SCHEMA, _LOCK_CATALOG, _LOCK_INTERACTIONS = 0x6D69_7872_0001, 0x6D69_7872_0002, 0x6D69_7872_0003
_LOCK_FORGOTTEN = 0x6D69_7872_0004

# 1: no mixrec_meta; SQLite logs were INTEGER PRIMARY KEY (ids of deleted newest rows reused).
# 2: mixrec_meta (schema_version, database_id); the id-ordered logs never reuse ids.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class StoredInteraction:
    """An interaction as stored: ``Interaction``'s fields plus its database id."""

    id: int
    user_id: str
    item_id: str
    event: str
    weight: float
    timestamp: float

    def to_interaction(self) -> Interaction:
        return Interaction(self.user_id, self.item_id, self.event, self.weight, self.timestamp)


@dataclass(frozen=True)
class CatalogChange:
    id: int
    item_id: str
    op: str  # "add" | "delete"


def _chunks(seq: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def _item_from_row(row: ItemRow) -> Item:
    return Item(item_id=row.id, type=row.type, title=row.title, description=row.description or "",
                tags=list(row.tags or []), category=row.category, image=row.image, audio=row.audio,
                video=row.video)


def _fill_row(row: ItemRow, item: Item) -> None:
    row.type, row.title, row.description = item.type, item.title, item.description
    row.tags, row.category = list(item.tags), item.category
    row.image, row.audio, row.video = item.image, item.audio, item.video
    row.tag_rows = [ItemTagRow(item_id=item.item_id, tag=t) for t in dict.fromkeys(item.tags)]


def _check_event(ev: Interaction) -> None:
    """Refuse an event the database would store badly (or, on one backend only, refuse with a 500)."""
    if not ev.user_id or not ev.item_id:
        raise InputError("feedback needs a user_id and an item_id")
    if len(ev.user_id) > ID_LEN or len(ev.item_id) > ID_LEN:
        raise InputError(f"feedback user_id and item_id must be at most {ID_LEN} characters "
                         f"(got user_id={shown(ev.user_id)}, item_id={shown(ev.item_id)})")
    if not ev.event or len(ev.event) > _MAX_EVENT_LEN:
        raise InputError(f"feedback event must be 1..{_MAX_EVENT_LEN} characters, got {shown(ev.event)}")
    if not math.isfinite(ev.weight) or not math.isfinite(ev.timestamp):
        raise InputError(f"feedback weight and timestamp must be finite numbers "
                         f"(got weight={shown(ev.weight)}, timestamp={shown(ev.timestamp)})")


def _sqlite_rebuild_log(conn: Connection, table: Table) -> int:
    """Rebuild one id-ordered log table with AUTOINCREMENT, keeping its rows and ids; returns max(id).

    SQLite cannot ALTER a column, so (inside the caller's transaction): create the new table under a
    temporary name, copy the rows, drop the old table (and with it its indexes), rename the new one,
    recreate the indexes and seed ``sqlite_sequence`` so the next id follows the largest one kept.
    """
    tmp_name = f"_mixrec_new_{table.name}"
    md = MetaData()
    for t in Base.metadata.sorted_tables:  # the other tables too, so foreign keys resolve when compiled
        if t.name != table.name:
            t.to_metadata(md)
    new = table.to_metadata(md, name=tmp_name)
    conn.execute(CreateTable(new))  # the table only; its indexes are created after the rename
    old_cols = {row[1] for row in conn.exec_driver_sql(f'PRAGMA table_info("{table.name}")')}
    cols = ", ".join(f'"{c.name}"' for c in table.columns if c.name in old_cols)
    conn.exec_driver_sql(f'INSERT INTO "{tmp_name}" ({cols}) SELECT {cols} FROM "{table.name}" ORDER BY id')
    top = int(conn.exec_driver_sql(f'SELECT coalesce(max(id), 0) FROM "{tmp_name}"').scalar())
    conn.exec_driver_sql(f'DROP TABLE "{table.name}"')
    conn.exec_driver_sql(f'ALTER TABLE "{tmp_name}" RENAME TO "{table.name}"')
    for index in table.indexes:
        index.create(conn)
    conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name IN (?, ?)", (table.name, tmp_name))
    conn.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, top))
    return top


def _sqlite_reuses_ids(conn: Connection, table: str) -> bool:
    """Whether an existing SQLite table lacks AUTOINCREMENT (False when the table does not exist)."""
    sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar()
    return sql is not None and "AUTOINCREMENT" not in sql.upper()


def _sqlite_engine(url, memory: bool) -> Engine:
    if memory:
        # One shared connection, otherwise every pooled connection sees its own empty database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # SQLAlchemy's documented pysqlite recipe: turn off the driver's implicit BEGIN and emit our own
        # (see _on_begin), so that write transactions can start with BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A write takes SQLite's write lock up front: a deferred read-then-write transaction could
        # otherwise fail with SQLITE_BUSY_SNAPSHOT when another process commits in between.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("mixrec_write") else "BEGIN")

    return engine


class CatalogStore:
    """Items, users and feedback in SQLite (default) or PostgreSQL."""

    def __init__(self, url: str = "sqlite:///data/mixrec.db", *, create: bool = True, pool_size: int = 5,
                 max_overflow: int = 10, echo: bool = False):
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        if self.backend == "sqlite":
            memory = parsed.database in (None, "", ":memory:")
            self._engine = _sqlite_engine(parsed, memory)
        else:
            self._engine = create_engine(parsed, pool_size=pool_size, max_overflow=max_overflow,
                                         pool_pre_ping=True, echo=echo)
        self._read = sessionmaker(bind=self._engine, expire_on_commit=False)
        self._write = sessionmaker(bind=self._engine.execution_options(mixrec_write=True), expire_on_commit=False)
        self.url = parsed.render_as_string(hide_password=True)
        self._database_id: str | None = None
        if create:
            self.create_schema()

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def _read_meta(conn: Connection) -> dict[str, str] | None:
        """The ``mixrec_meta`` facts, or ``None`` when the table does not exist (a version-1 or empty database)."""
        if not inspect(conn).has_table(MetaRow.__tablename__):
            return None
        return {k: v for k, v in conn.execute(select(MetaRow.key, MetaRow.value))}

    def _note_meta(self, meta: dict[str, str]) -> bool:
        """Remember the database id; True when the schema needs nothing from this code."""
        self._database_id = meta.get("database_id") or None
        try:
            version = int(meta.get("schema_version", "0"))
        except ValueError:
            version = 0
        if version > SCHEMA_VERSION:
            log.warning("database %s has schema version %d, newer than this code's %d; leaving it as it is",
                        self.url, version, SCHEMA_VERSION)
        return version >= SCHEMA_VERSION and self._database_id is not None

    def create_schema(self) -> None:
        """Create missing tables and migrate an older schema (idempotent, cheap when current).

        Replicas starting together take turns: PostgreSQL under an advisory lock, SQLite under its
        write lock; each re-reads the schema version once it holds the lock.
        """
        with self._engine.connect() as conn:  # fast path: a current schema is one small read
            meta = self._read_meta(conn)
        if meta is not None and self._note_meta(meta):
            return
        with self._engine.execution_options(mixrec_write=True).begin() as conn:
            if self.backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_SCHEMA})
            meta = self._read_meta(conn)
            if meta is not None and self._note_meta(meta):
                return
            existing = set(inspect(conn).get_table_names())
            legacy = meta is None and bool(existing & set(Base.metadata.tables))
            if self.backend == "sqlite":
                for table in ID_LOGS.values():
                    if _sqlite_reuses_ids(conn, table):
                        top = _sqlite_rebuild_log(conn, Base.metadata.tables[table])
                        log.info("storage migration: rebuilt SQLite table %s with AUTOINCREMENT "
                                 "(ids are no longer reused; next id after %d)", table, top)
            Base.metadata.create_all(conn)
            meta = meta or {}
            old_version = meta.get("schema_version")
            database_id = meta.get("database_id") or str(uuid.uuid4())
            for key, value in (("schema_version", str(SCHEMA_VERSION)), ("database_id", database_id)):
                if meta.get(key) != value:
                    conn.execute(delete(MetaRow).where(MetaRow.key == key))
                    conn.execute(MetaRow.__table__.insert().values(key=key, value=value))
            self._database_id = database_id
            if legacy or (old_version is not None and old_version != str(SCHEMA_VERSION)):
                log.info("storage migration: %s schema version %s -> %d (database id %s)", self.url,
                         old_version or "1", SCHEMA_VERSION, database_id)

    @property
    def database_id(self) -> str:
        """A random UUID chosen when the schema was created: the same for every store on this database.

        A watermark saved against one database means nothing against another; compare this first.
        """
        if self._database_id is None:
            with self._engine.connect() as conn:
                meta = self._read_meta(conn)
            if meta is not None:
                self._note_meta(meta)
            if self._database_id is None:
                raise SchemaError(f"database {self.url} has no mixrec_meta database_id: "
                                  "open it once with create=True to migrate its schema")
        return self._database_id

    def high_water_marks(self) -> dict[str, int]:
        """The largest id each id-ordered log ever issued: ``{"events", "changes", "forgotten"}`` (0: none yet).

        Counts ids whose rows were deleted since (and, on PostgreSQL, ids taken by transactions that
        rolled back), so a watermark above this never came from this database.
        """
        marks = {key: 0 for key in ID_LOGS}
        with self._engine.connect() as conn:
            if self.backend == "sqlite":
                has_seq = conn.exec_driver_sql(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'").scalar()
                seqs = dict(conn.exec_driver_sql("SELECT name, max(seq) FROM sqlite_sequence GROUP BY name").all()
                            if has_seq else [])
                for key, table in ID_LOGS.items():
                    marks[key] = int(seqs.get(table) or 0)
            elif self.backend == "postgresql":
                for key, table in ID_LOGS.items():
                    seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
                    if seq is None:
                        continue
                    # pg_get_serial_sequence returns a quoted, schema-qualified name. A sequence never used
                    # (or reset with setval(..., false)) reads last_value = the next id, is_called = false.
                    last, called = conn.exec_driver_sql(f"SELECT last_value, is_called FROM {seq}").one()
                    marks[key] = int(last) if called else int(last) - 1
            for key, table in ID_LOGS.items():  # explicit ids inserted past the counter still count
                top = conn.execute(select(func.max(Base.metadata.tables[table].c.id))).scalar()
                marks[key] = max(marks[key], int(top or 0))
        return marks

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "CatalogStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _writing(self, *locks: int) -> Iterator[Session]:
        with self._write() as session, session.begin():
            if self.backend == "postgresql":
                for lock in sorted(locks):
                    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})
            yield session

    @staticmethod
    def _live_ids(session: Session, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(ids):
            found.update(session.scalars(select(ItemRow.id).where(ItemRow.id.in_(chunk),
                                                                  ItemRow.deleted_at.is_(None))))
        return found

    # ------------------------------------------------------------------ items

    def add_items(self, items: Iterable[Item],
                  vectors: dict[str, dict[str, np.ndarray]] | None = None) -> list[str]:
        """Store new items (all or none). Re-adding a deleted id revives it with the new content.

        ``vectors`` (``{item_id: {modality: native-space vector}}``) are stored in the same
        transaction, so a replica that sees the add also sees what it needs to score the item.
        Raises ``DuplicateItemsError`` naming every id that is already live or repeated in the call.
        """
        items = list(items)
        ids = [it.item_id for it in items]
        repeated = [i for i, n in Counter(ids).items() if n > 1]
        if repeated:
            raise DuplicateItemsError(sorted(repeated))
        try:
            with self._writing(_LOCK_CATALOG) as s:
                existing: dict[str, ItemRow] = {}
                for chunk in _chunks(ids):
                    existing.update((r.id, r) for r in s.scalars(select(ItemRow).where(ItemRow.id.in_(chunk))))
                live = [i for i, r in existing.items() if r.deleted_at is None]
                if live:
                    raise DuplicateItemsError(live)
                for it in items:
                    row = existing.get(it.item_id)
                    if row is None:
                        row = ItemRow(id=it.item_id)
                        s.add(row)
                    else:  # revive a soft-deleted id
                        row.deleted_at, row.created_at = None, utcnow()
                    _fill_row(row, it)
                    s.add(CatalogChangeRow(item_id=it.item_id, op="add"))
                if vectors:
                    self._write_vectors(s, {i: vectors[i] for i in ids if i in vectors})
        except IntegrityError:
            # Another writer inserted one of these ids between our check and our commit.
            with self._read() as s:
                raced = self._live_ids(s, ids)
            if raced:
                raise DuplicateItemsError(sorted(raced)) from None
            raise
        return ids

    def get_items(self, item_ids: Sequence[str], include_deleted: bool = False) -> list[Item]:
        """The items with these ids, in the order asked; unknown (or deleted) ids are left out."""
        rows: dict[str, ItemRow] = {}
        with self._read() as s:
            for chunk in _chunks(list(item_ids)):
                q = select(ItemRow).where(ItemRow.id.in_(chunk))
                if not include_deleted:
                    q = q.where(ItemRow.deleted_at.is_(None))
                rows.update((r.id, r) for r in s.scalars(q))
        return [_item_from_row(rows[i]) for i in item_ids if i in rows]

    def delete_items(self, item_ids: Sequence[str]) -> list[str]:
        """Soft-delete; returns the ids that were live (unknown or already deleted ids are ignored)."""
        ids = list(dict.fromkeys(item_ids))
        with self._writing(_LOCK_CATALOG) as s:
            live = self._live_ids(s, ids)
            gone = [i for i in ids if i in live]
            now = utcnow()
            for chunk in _chunks(gone):
                s.execute(update(ItemRow).where(ItemRow.id.in_(chunk)).values(deleted_at=now))
            s.add_all([CatalogChangeRow(item_id=i, op="delete") for i in gone])
        return gone

    def _item_query(self, types: Sequence[str] | None, tags: Sequence[str] | None, include_deleted: bool):
        q = select(ItemRow)
        if not include_deleted:
            q = q.where(ItemRow.deleted_at.is_(None))
        if types:
            q = q.where(ItemRow.type.in_(list(types)))
        if tags:  # any of the tags
            q = q.where(ItemRow.id.in_(select(ItemTagRow.item_id).where(ItemTagRow.tag.in_(list(tags)))))
        return q

    def list_items(self, types: Sequence[str] | None = None, tags: Sequence[str] | None = None,
                   limit: int = 100, offset: int = 0, include_deleted: bool = False) -> list[Item]:
        """Items in insertion order; ``types`` / ``tags`` keep items matching any of the values given."""
        if limit < 0 or offset < 0:
            raise InputError(f"limit and offset must be >= 0 (got limit={shown(limit)}, offset={shown(offset)})")
        q = self._item_query(types, tags, include_deleted).order_by(ItemRow.created_at, ItemRow.id)
        with self._read() as s:
            return [_item_from_row(r) for r in s.scalars(q.limit(limit).offset(offset))]

    def count_items(self, types: Sequence[str] | None = None, tags: Sequence[str] | None = None,
                    include_deleted: bool = False) -> int:
        sub = self._item_query(types, tags, include_deleted).subquery()
        with self._read() as s:
            return int(s.scalar(select(func.count()).select_from(sub)))

    def catalog_changes(self, since_id: int | None = None, limit: int | None = None) -> list[CatalogChange]:
        """Adds and deletes after ``since_id`` in commit order: how replicas catch up with each other."""
        q = select(CatalogChangeRow).order_by(CatalogChangeRow.id)
        if since_id is not None:
            q = q.where(CatalogChangeRow.id > since_id)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as s:
            return [CatalogChange(r.id, r.item_id, r.op) for r in s.scalars(q)]

    # ------------------------------------------------------------------ users

    def _ensure_users(self, s: Session, user_ids: Sequence[str]) -> None:
        rows = [{"id": u, "created_at": utcnow()} for u in dict.fromkeys(user_ids)]
        if not rows:
            return
        if self.backend in ("sqlite", "postgresql"):
            if self.backend == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            s.execute(insert(UserRow).on_conflict_do_nothing(index_elements=["id"]), rows)
            return
        known: set[str] = set()
        for chunk in _chunks([r["id"] for r in rows]):
            known.update(s.scalars(select(UserRow.id).where(UserRow.id.in_(chunk))))
        s.add_all([UserRow(**r) for r in rows if r["id"] not in known])

    def upsert_user(self, user_id: str, profile: dict[str, Any] | None = None) -> None:
        """Create the user if needed and set its profile (``None`` keeps the stored one)."""
        with self._writing() as s:
            self._ensure_users(s, [user_id])
            if profile is not None:
                s.execute(update(UserRow).where(UserRow.id == user_id).values(profile=profile))

    def user_profile(self, user_id: str) -> dict[str, Any] | None:
        with self._read() as s:
            return s.scalar(select(UserRow.profile).where(UserRow.id == user_id))

    def user_exists(self, user_id: str) -> bool:
        with self._read() as s:
            return s.scalar(select(UserRow.id).where(UserRow.id == user_id)) is not None

    def forget_user(self, user_id: str, *, log_always: bool = True) -> dict[str, int | None]:
        """Remove the user and every interaction of theirs and append them to the erasure log, in one transaction.

        Returns ``{"interactions": n, "users": n, "erasure_id": id}``. The erasure-log row is appended
        when rows were removed or when ``log_always`` (the default: the trained model may know a user
        the database has no rows for); ``erasure_id`` is ``None`` when nothing was logged. Either all of
        it commits or none does, so no replica can miss an erasure that happened.
        """
        with self._writing(_LOCK_INTERACTIONS, _LOCK_FORGOTTEN) as s:
            n_events = int(s.execute(delete(InteractionRow).where(InteractionRow.user_id == user_id)).rowcount or 0)
            n_users = int(s.execute(delete(UserRow).where(UserRow.id == user_id)).rowcount or 0)
            erasure_id = None
            if log_always or n_events or n_users:
                row = ForgottenUserRow(user_id=user_id)
                s.add(row)
                s.flush()
                erasure_id = int(row.id)
        return {"interactions": n_events, "users": n_users, "erasure_id": erasure_id}

    # ------------------------------------------------------------------ feedback

    def record_feedback(self, events: Iterable[Interaction]) -> list[int]:
        """Store events in one transaction and return their ids once committed (durable).

        Unknown users are created; unknown or deleted items raise ``UnknownItemsError`` and nothing
        is stored.
        """
        events = list(events)
        for ev in events:
            _check_event(ev)
        if not events:
            return []
        with self._writing(_LOCK_INTERACTIONS) as s:
            item_ids = list(dict.fromkeys(ev.item_id for ev in events))
            missing = set(item_ids) - self._live_ids(s, item_ids)
            if missing:
                raise UnknownItemsError(sorted(missing))
            self._ensure_users(s, [ev.user_id for ev in events])
            rows = [InteractionRow(user_id=ev.user_id, item_id=ev.item_id, event=ev.event,
                                   weight=float(ev.weight), timestamp=float(ev.timestamp)) for ev in events]
            s.add_all(rows)
            s.flush()
            ids = [int(r.id) for r in rows]
        return ids

    def interactions(self, since_id: int | None = None, limit: int | None = None,
                     user_id: str | None = None, newest_first: bool = False) -> list[StoredInteraction]:
        """Stored interactions with id > ``since_id``, oldest first (newest first when asked: with
        ``limit``, the newest ``limit`` ones)."""
        q = select(InteractionRow).order_by(InteractionRow.id.desc() if newest_first else InteractionRow.id)
        if since_id is not None:
            q = q.where(InteractionRow.id > since_id)
        if user_id is not None:
            q = q.where(InteractionRow.user_id == user_id)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as s:
            return [StoredInteraction(r.id, r.user_id, r.item_id, r.event, r.weight, r.timestamp)
                    for r in s.scalars(q)]

    def user_items(self, user_id: str, events: Sequence[str] | None = None) -> set[str]:
        """Ids of the items ``user_id`` has interactions with; only those with these event names if given.

        ``events=None``: any event; an empty ``events``: none (an empty set).
        """
        if isinstance(events, str):
            events = [events]
        q = select(InteractionRow.item_id).where(InteractionRow.user_id == user_id).distinct()
        with self._read() as s:
            if events is None:
                return set(s.scalars(q))
            found: set[str] = set()
            for chunk in _chunks(list(dict.fromkeys(events))):
                found.update(s.scalars(q.where(InteractionRow.event.in_(chunk))))
            return found

    def seen_items(self, user_id: str) -> set[str]:
        return self.user_items(user_id)

    # ------------------------------------------------------------------ item vectors

    @staticmethod
    def _write_vectors(s: Session, vectors: dict[str, dict[str, np.ndarray]]) -> None:
        for chunk in _chunks(list(vectors)):
            s.execute(delete(ItemVectorRow).where(ItemVectorRow.item_id.in_(chunk)))
        for iid, mods in vectors.items():
            for m, v in mods.items():
                v = np.asarray(v, dtype="<f4").reshape(-1)
                s.add(ItemVectorRow(item_id=iid, modality=m, dim=int(v.size), data=v.tobytes()))

    def get_vectors(self, item_ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        with self._read() as s:
            for chunk in _chunks(list(item_ids)):
                for r in s.scalars(select(ItemVectorRow).where(ItemVectorRow.item_id.in_(chunk))):
                    out.setdefault(r.item_id, {})[r.modality] = np.frombuffer(r.data, dtype="<f4").copy()
        return out

    # ------------------------------------------------------------------ erasure log

    def log_forgotten(self, user_id: str) -> int:
        """Append ``user_id`` to the erasure log; returns the log entry's id.

        Kept for compatibility: ``forget_user`` now logs in the same transaction as the erasure.
        """
        with self._writing(_LOCK_FORGOTTEN) as s:
            row = ForgottenUserRow(user_id=user_id)
            s.add(row)
            s.flush()
            return int(row.id)

    def forgotten_since(self, since_id: int) -> list[tuple[int, str]]:
        with self._read() as s:
            q = select(ForgottenUserRow).where(ForgottenUserRow.id > since_id).order_by(ForgottenUserRow.id)
            return [(int(r.id), r.user_id) for r in s.scalars(q)]

    # ------------------------------------------------------------------ info

    def stats(self) -> dict[str, Any]:
        with self._read() as s:
            by_type = dict(s.execute(select(ItemRow.type, func.count()).where(ItemRow.deleted_at.is_(None))
                                     .group_by(ItemRow.type)).all())
            return {
                "backend": self.backend,
                "items": int(sum(by_type.values())),
                "items_by_type": {t: int(n) for t, n in sorted(by_type.items())},
                "deleted_items": int(s.scalar(select(func.count()).select_from(ItemRow)
                                              .where(ItemRow.deleted_at.is_not(None)))),
                "users": int(s.scalar(select(func.count()).select_from(UserRow))),
                "interactions": int(s.scalar(select(func.count()).select_from(InteractionRow))),
                "last_interaction_id": s.scalar(select(func.max(InteractionRow.id))),
            }
