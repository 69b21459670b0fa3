"""Durable storage: catalog, users and feedback in a database; uploaded media on disk."""

from mixrec.storage.errors import (
    DuplicateItemsError,
    MediaError,
    MediaTooLargeError,
    SchemaError,
    StorageError,
    UnknownItemsError,
    UnsupportedMediaError,
)
from mixrec.storage.media import MediaStore, StoredMedia
from mixrec.storage.store import CatalogChange, CatalogStore, StoredInteraction

__all__ = [
    "CatalogChange",
    "CatalogStore",
    "DuplicateItemsError",
    "MediaError",
    "MediaStore",
    "MediaTooLargeError",
    "SchemaError",
    "StorageError",
    "StoredInteraction",
    "StoredMedia",
    "UnknownItemsError",
    "UnsupportedMediaError",
]
