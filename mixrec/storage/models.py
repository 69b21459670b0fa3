"""SQLAlchemy 2 tables for the durable catalog, users and feedback.

Deleting an item is a soft delete (``deleted_at``): its past interactions stay
valid training history and other replicas learn about the deletion through
``catalog_changes``, an append-only log of adds and deletes they poll.

The three id-ordered logs (``interactions``, ``catalog_changes``, ``forgotten_users``) are
polled with ``id > watermark``, so their ids must never be handed out twice, not even
after the newest rows were deleted: on SQLite they are ``INTEGER PRIMARY KEY
AUTOINCREMENT`` (``sqlite_autoincrement``; plain ``INTEGER PRIMARY KEY`` reuses the
largest id once its row is gone), on PostgreSQL ``BIGSERIAL`` (a sequence, never reused).
``mixrec_meta`` records the schema version and the database's identity.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ID_LEN = 200  # matches mixrec.catalog.Item.item_id's max_length

# SQLite only auto-assigns INTEGER PRIMARY KEY (the rowid alias); PostgreSQL gets a 64-bit serial.
AutoId = BigInteger().with_variant(Integer(), "sqlite")
# Table option for the id-ordered logs: AUTOINCREMENT on SQLite, so ids are never reused.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}
# The tables whose ids are watermarks, by the name ``CatalogStore.high_water_marks`` gives them.
ID_LOGS = {"events": "interactions", "changes": "catalog_changes", "forgotten": "forgotten_users"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class ItemRow(Base):
    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    type: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)  # ordered copy; item_tags is for filtering
    category: Mapped[str | None] = mapped_column(String(ID_LEN))
    image: Mapped[str | None] = mapped_column(Text)  # media references (paths / MediaStore names)
    audio: Mapped[str | None] = mapped_column(Text)
    video: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)

    tag_rows: Mapped[list["ItemTagRow"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class ItemTagRow(Base):
    __tablename__ = "item_tags"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True, index=True)


class CatalogChangeRow(Base):
    """One add or delete; ``id`` grows in commit order so replicas can poll ``id > last_seen``."""

    __tablename__ = "catalog_changes"
    __table_args__ = dict(NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    op: Mapped[str] = mapped_column(String(8))  # "add" | "delete"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class InteractionRow(Base):
    __tablename__ = "interactions"
    __table_args__ = (Index("ix_interactions_user_item", "user_id", "item_id"), dict(NEVER_REUSE_IDS))

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    timestamp: Mapped[float] = mapped_column(Float)  # when it happened (caller's clock, epoch seconds)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # when stored


class ItemVectorRow(Base):
    """An item's native-space encoder vectors, so replicas and restarts add it without re-encoding."""

    __tablename__ = "item_vectors"

    item_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    modality: Mapped[str] = mapped_column(String(16), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # float32 little-endian


class ForgottenUserRow(Base):
    """Erasure log: every replica (and a restart from the trained artifacts) drops these users."""

    __tablename__ = "forgotten_users"
    __table_args__ = dict(NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MetaRow(Base):
    """Key/value facts about the database itself: ``schema_version``, ``database_id``."""

    __tablename__ = "mixrec_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
