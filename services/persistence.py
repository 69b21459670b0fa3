"""Service-side tables beside the catalog: item vectors and forgotten users.

The database is the source of truth; the in-memory model is a cache of it.
Storing each added item's native-space vectors lets a restarted replica, or
another replica, add the item to its model without re-encoding its media; the
forgotten-users log lets every replica (and a restart from the trained
artifacts) drop a user who asked to be forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import DateTime, Engine, Integer, LargeBinary, String, delete, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from mixrec.storage.models import ID_LEN


class _Base(DeclarativeBase):
    pass


class ItemVectorRow(_Base):
    __tablename__ = "item_vectors"

    item_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    modality: Mapped[str] = mapped_column(String(16), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # float32 little-endian


class ForgottenUserRow(_Base):
    __tablename__ = "forgotten_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(timezone.utc))


class ServiceTables:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _Base.metadata.create_all(engine)

    def put_vectors(self, vectors: dict[str, dict[str, np.ndarray]]) -> None:
        """``{item_id: {modality: vector}}``, replacing what was stored for those items."""
        with Session(self.engine) as s, s.begin():
            ids = list(vectors)
            if ids:
                s.execute(delete(ItemVectorRow).where(ItemVectorRow.item_id.in_(ids)))
            for iid, mods in vectors.items():
                for m, v in mods.items():
                    v = np.asarray(v, dtype="<f4").reshape(-1)
                    s.add(ItemVectorRow(item_id=iid, modality=m, dim=int(v.size), data=v.tobytes()))

    def get_vectors(self, item_ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        with Session(self.engine) as s:
            for i in range(0, len(item_ids), 500):
                chunk = list(item_ids[i:i + 500])
                for r in s.scalars(select(ItemVectorRow).where(ItemVectorRow.item_id.in_(chunk))):
                    out.setdefault(r.item_id, {})[r.modality] = np.frombuffer(r.data, dtype="<f4").copy()
        return out

    def forget(self, user_id: str) -> int:
        with Session(self.engine) as s, s.begin():
            row = ForgottenUserRow(user_id=user_id)
            s.add(row)
            s.flush()
            return int(row.id)

    def forgotten_since(self, since_id: int) -> list[tuple[int, str]]:
        with Session(self.engine) as s:
            q = select(ForgottenUserRow).where(ForgottenUserRow.id > since_id).order_by(ForgottenUserRow.id)
            return [(r.id, r.user_id) for r in s.scalars(q)]
