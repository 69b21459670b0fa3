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
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, delete, event, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from mixrec.catalog import Interaction, Item
from mixrec.storage.errors import DuplicateItemsError, UnknownItemsError
from mixrec.storage.models import (
    Base,
    CatalogChangeRow,
    ForgottenUserRow,
    InteractionRow,
    ItemRow,
    ItemTagRow,
    ItemVectorRow,
    UserRow,
    utcnow,
)

_IN_CHUNK = 500  # ids per IN (...) clause, well under SQLite's and PostgreSQL's bound-parameter limits
_MAX_EVENT_LEN = 32
# PostgreSQL advisory-lock keys. Writers of an id-ordered log take its lock for the transaction,
# so ids become visible in commit order and a poller reading "id > last_seen" never skips one.
_LOCK_SCHEMA, _LOCK_CATALOG, _LOCK_INTERACTIONS = 0x6D69_7872_0001, 0x6D69_7872_0002, 0x6D69_7872_0003


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
    if not ev.user_id or not ev.item_id:
        raise ValueError("feedback needs a user_id and an item_id")
    if not ev.event or len(ev.event) > _MAX_EVENT_LEN:
        raise ValueError(f"feedback event must be 1..{_MAX_EVENT_LEN} characters, got {ev.event!r}")
    if not math.isfinite(ev.weight) or not math.isfinite(ev.timestamp):
        raise ValueError(f"feedback weight and timestamp must be finite numbers "
                         f"(got weight={ev.weight!r}, timestamp={ev.timestamp!r})")


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
        if create:
            self.create_schema()

    # ------------------------------------------------------------------ lifecycle

    def create_schema(self) -> None:
        """Create missing tables (idempotent; replicas starting together on PostgreSQL take turns)."""
        with self._engine.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_SCHEMA})
            Base.metadata.create_all(conn)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "CatalogStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _writing(self, lock: int | None = None) -> Iterator[Session]:
        with self._write() as session, session.begin():
            if lock is not None and self.backend == "postgresql":
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
            raise ValueError(f"limit and offset must be >= 0 (got limit={limit}, offset={offset})")
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

    def forget_user(self, user_id: str) -> dict[str, int]:
        """Remove the user and every interaction of theirs; returns how many rows went."""
        with self._writing(_LOCK_INTERACTIONS) as s:
            n_events = s.execute(delete(InteractionRow).where(InteractionRow.user_id == user_id)).rowcount
            n_users = s.execute(delete(UserRow).where(UserRow.id == user_id)).rowcount
        return {"interactions": int(n_events or 0), "users": int(n_users or 0)}

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
                     user_id: str | None = None) -> list[StoredInteraction]:
        """Stored interactions with id > ``since_id``, oldest first."""
        q = select(InteractionRow).order_by(InteractionRow.id)
        if since_id is not None:
            q = q.where(InteractionRow.id > since_id)
        if user_id is not None:
            q = q.where(InteractionRow.user_id == user_id)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as s:
            return [StoredInteraction(r.id, r.user_id, r.item_id, r.event, r.weight, r.timestamp)
                    for r in s.scalars(q)]

    def seen_items(self, user_id: str) -> set[str]:
        with self._read() as s:
            return set(s.scalars(select(InteractionRow.item_id).where(InteractionRow.user_id == user_id)
                                 .distinct()))

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
        """Append ``user_id`` to the erasure log; returns the log entry's id."""
        with self._writing() as s:
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
