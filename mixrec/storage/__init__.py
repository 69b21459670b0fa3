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

# The database half (SQLAlchemy) loads on first use: a process that only sniffs or stores media (an
# encoder worker importing the service module, the media endpoint) does not pay for it.
_STORE_NAMES = ("CatalogChange", "CatalogStore", "StoredInteraction")


def __getattr__(name: str):
    if name in _STORE_NAMES:
        from mixrec.storage import store

        return getattr(store, name)
    raise AttributeError(f"module 'mixrec.storage' has no attribute {name!r}")


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
