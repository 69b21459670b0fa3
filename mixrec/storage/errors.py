"""Typed storage errors: each carries its HTTP status through ``mixrec.errors``."""

from __future__ import annotations

from mixrec.errors import (ConflictError, InputError, MixrecError, NotFoundError, PayloadTooLargeError,
                           UnsupportedMediaTypeError, shown_list)


class StorageError(MixrecError):
    """Base class for errors raised by ``mixrec.storage``."""


class SchemaError(StorageError):
    """The database's schema is not one this code can use as asked (a server-side problem: 500)."""


class DuplicateItemsError(StorageError, ConflictError):
    """``add_items`` was given ids that are already in the catalog (or repeated in the call)."""

    status, code = 409, "conflict"

    def __init__(self, item_ids: list[str]):
        self.item_ids = sorted(set(item_ids))
        super().__init__(f"item ids already exist: {shown_list(self.item_ids)}")


class UnknownItemsError(StorageError, NotFoundError):
    """Feedback named items that are not in the catalog (or were deleted)."""

    status, code = 404, "not_found"

    def __init__(self, item_ids: list[str]):
        self.item_ids = sorted(set(item_ids))
        super().__init__(f"unknown item ids: {shown_list(self.item_ids)}")


class MediaError(StorageError, InputError):
    """An uploaded media file was refused."""

    status, code = 400, "bad_request"


class MediaTooLargeError(MediaError, PayloadTooLargeError):
    status, code = 413, "payload_too_large"

    def __init__(self, size: int, limit: int, kind: str):
        self.size, self.limit, self.kind = size, limit, kind
        super().__init__(f"{kind} upload is {size} bytes; the limit is {limit} bytes")


class UnsupportedMediaError(MediaError, UnsupportedMediaTypeError):
    """The bytes are not a recognised image / audio / video format, or not the kind expected."""

    status, code = 415, "unsupported_media_type"
