"""Typed storage errors: the service maps each one to a clear 4xx answer."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for errors raised by ``mixrec.storage``."""


class DuplicateItemsError(StorageError, ValueError):
    """``add_items`` was given ids that are already in the catalog (or repeated in the call)."""

    def __init__(self, item_ids: list[str]):
        self.item_ids = sorted(set(item_ids))
        shown = ", ".join(repr(i) for i in self.item_ids[:20])
        more = f" (and {len(self.item_ids) - 20} more)" if len(self.item_ids) > 20 else ""
        super().__init__(f"item ids already exist: {shown}{more}")


class UnknownItemsError(StorageError, KeyError):
    """Feedback named items that are not in the catalog (or were deleted)."""

    def __init__(self, item_ids: list[str]):
        self.item_ids = sorted(set(item_ids))
        shown = ", ".join(repr(i) for i in self.item_ids[:20])
        more = f" (and {len(self.item_ids) - 20} more)" if len(self.item_ids) > 20 else ""
        super().__init__(f"unknown item ids: {shown}{more}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class MediaError(StorageError, ValueError):
    """An uploaded media file was refused."""


class MediaTooLargeError(MediaError):
    def __init__(self, size: int, limit: int, kind: str):
        self.size, self.limit, self.kind = size, limit, kind
        super().__init__(f"{kind} upload is {size} bytes; the limit is {limit} bytes")


class UnsupportedMediaError(MediaError):
    """The bytes are not a recognised image / audio / video format, or not the kind expected."""
