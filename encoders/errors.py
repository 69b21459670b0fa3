"""Typed errors raised by encoders. Services map these to 4xx responses."""

from __future__ import annotations


class EncoderError(Exception):
    """Base class for encoder failures."""


class EncoderConfigError(EncoderError, ValueError):
    """An encoder cannot be built from its config (bad kind, missing weights, wrong dims)."""


class InvalidMediaError(EncoderError, ValueError):
    """One input item cannot be encoded: corrupt, oversized, empty, unsupported.

    ``index`` is the item's position in the batch (None for a single item) and
    ``item_id`` the caller's id when known, so a batch error names the culprit.
    """

    def __init__(self, reason: str, *, modality: str | None = None, index: int | None = None,
                 item_id: str | None = None):
        self.reason = reason
        self.modality = modality
        self.index = index
        self.item_id = item_id
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.modality:
            where.append(self.modality)
        if self.item_id is not None:
            where.append(f"item {self.item_id!r}")
        if self.index is not None:
            where.append(f"batch index {self.index}")
        prefix = f"invalid {' '.join(where)}: " if where else "invalid input: "
        return prefix + self.reason

    def at(self, index: int | None = None, item_id: str | None = None) -> "InvalidMediaError":
        """Return a copy that also names the batch position / item id."""
        return InvalidMediaError(self.reason, modality=self.modality,
                                 index=self.index if index is None else index,
                                 item_id=self.item_id if item_id is None else item_id)
