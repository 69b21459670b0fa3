"""Items and interactions held in memory (lists of dicts or pandas DataFrames), validated row by row.

No catalogue directory: rows become the same ``mixrec.catalog.Item`` / ``Interaction`` records a
catalogue directory gives. Ids may be strings or integers (integers become their decimal string, as
the service's JSON ids are strings). Media fields (``image``, ``audio``, ``video``) are a file path
or the encoded bytes; bytes stay in ``Catalog.blobs`` (an ``Item`` holds paths only) until
``encode_items`` reads them. Every error names the row and the field.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from mixrec.catalog import Interaction, Item
from mixrec.errors import InputError, shown

MEDIA_FIELDS = ("image", "audio", "video")
INTERACTION_COLUMNS = ("user_id", "item_id", "event", "weight", "timestamp")


class DataError(InputError):
    """A row of the caller's items or interactions is invalid; the message names the row and field."""


@dataclass(frozen=True)
class Catalog:
    """Validated items in the caller's order; ``blobs[(item_id, field)]`` holds media given as bytes."""

    items: tuple[Item, ...]
    blobs: Mapping[tuple[str, str], bytes] = field(default_factory=dict)

    @property
    def item_ids(self) -> list[str]:
        return [it.item_id for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def media(self, item: Item, name: str) -> bytes | str | None:
        """What the encoder reads for ``item``'s ``name`` medium: its bytes, its path, or None."""
        return self.blobs.get((item.item_id, name)) or getattr(item, name)


def records(rows: Any, what: str) -> list[dict]:
    """A list of dicts from a list of mappings or a DataFrame (anything with ``to_dict("records")``)."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        rows = rows.to_dict("records")
    if isinstance(rows, Mapping) or isinstance(rows, (str, bytes)):
        raise DataError(f"{what}: expected a list of dicts or a pandas DataFrame, got one {type(rows).__name__}")
    out = list(rows)
    for r, row in enumerate(out):
        if not isinstance(row, Mapping):
            raise DataError(f"{what} row {r}: expected a dict, got {type(row).__name__}")
    return [{k: _plain(v) for k, v in row.items() if not _missing(v)} for row in out]


def _missing(v: Any) -> bool:
    """A DataFrame's empty cell (None / NaN / NaT) means the field is absent."""
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN and NaT are the values unequal to themselves
    except (TypeError, ValueError):  # arrays and lists compare element-wise
        return False


def _plain(v: Any) -> Any:
    """numpy / pandas scalars as Python values (a DataFrame hands out numpy.int64, Timestamp...)."""
    if hasattr(v, "tolist") and not isinstance(v, (bytes, bytearray)):
        return v.tolist()
    return v


def _id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: ids must be strings or integers, got {type(value).__name__} {shown(value)}")
    text = str(value)
    if not text.strip():
        raise DataError(f"{where}: the id is empty")
    return text


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "<row>"
    return f"field {loc!r}: {e['msg']}"


def items(rows: Any, *, base_dir: str | os.PathLike | None = None) -> Catalog:
    """Validated items from ``rows`` (dicts with ``item_id``, ``type``, ``title`` and optionally
    ``description``, ``tags``, ``category``, ``image`` / ``audio`` / ``video`` as a path or bytes).

    Relative media paths are read from ``base_dir`` (default: the working directory) and must exist.
    Raises ``DataError`` naming the first bad row and field, or a duplicate id."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    out: list[Item] = []
    blobs: dict[tuple[str, str], bytes] = {}
    first_row: dict[str, int] = {}
    for r, row in enumerate(records(rows, "items")):
        where = f"items row {r}"
        if "item_id" not in row:
            raise DataError(f"{where}: field 'item_id' is missing")
        row["item_id"] = _id(row["item_id"], f"{where} field 'item_id'")
        if row["item_id"] in first_row:
            raise DataError(f"{where}: duplicate item_id {shown(row['item_id'])} (first in row {first_row[row['item_id']]})")
        first_row[row["item_id"]] = r
        if isinstance(row.get("tags"), str):
            raise DataError(f"{where} field 'tags': expected a list of strings, got one string {shown(row['tags'])}")
        for name in MEDIA_FIELDS:
            row[name] = _media(row.get(name), base, f"{where} field {name!r}", blobs, row["item_id"], name)
        try:
            out.append(Item.model_validate(row))
        except ValidationError as e:
            raise DataError(f"{where} ({shown(row['item_id'])}): {_first_error(e)}") from None
    if not out:
        raise DataError("items: no rows")
    return Catalog(tuple(out), blobs)


def _media(value: Any, base: Path, where: str, blobs: dict, item_id: str, name: str) -> str | None:
    """A medium as an absolute path (checked to exist), or None with its bytes kept in ``blobs``."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not len(value):
            raise DataError(f"{where}: empty bytes")
        blobs[(item_id, name)] = bytes(value)
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise DataError(f"{where}: expected a file path or bytes, got {type(value).__name__}")
    path = (base / Path(value)).resolve()
    if not path.is_file():
        raise DataError(f"{where}: no such file {shown(str(path))}")
    return str(path)


def interactions(rows: Any, catalog: Catalog | Iterable[str], *,
                 events: Iterable[str] | None = None) -> list[Interaction]:
    """Validated interactions from ``rows`` (dicts with ``user_id``, ``item_id`` and optionally
    ``event`` (default ``like``), ``weight`` (default 1), ``timestamp`` (seconds, or a datetime)).

    Every ``item_id`` must be in ``catalog`` (a ``Catalog`` or its item ids); ``events``, when given,
    is the set of allowed event types (a config's ``events``). Raises ``DataError`` naming the row."""
    known = set(catalog.item_ids if isinstance(catalog, Catalog) else catalog)
    allowed = set(events) if events is not None else None
    out = []
    for r, row in enumerate(records(rows, "interactions")):
        where = f"interactions row {r}"
        extra = set(row) - set(INTERACTION_COLUMNS)
        if extra:
            raise DataError(f"{where}: unknown field(s) {sorted(extra)}; expected {list(INTERACTION_COLUMNS)}")
        for name in ("user_id", "item_id"):
            if name not in row:
                raise DataError(f"{where}: field {name!r} is missing")
        user = _id(row["user_id"], f"{where} field 'user_id'")
        item = _id(row["item_id"], f"{where} field 'item_id'")
        if item not in known:
            raise DataError(f"{where} field 'item_id': unknown item {shown(item)} (not among the items)")
        event = row.get("event", "like")
        if not isinstance(event, str) or (allowed is not None and event not in allowed):
            raise DataError(f"{where} field 'event': {shown(event)} is not a configured event type "
                            f"({sorted(allowed) if allowed is not None else 'a string'})")
        out.append(Interaction(user, item, event, _number(row.get("weight", 1.0), f"{where} field 'weight'"),
                               _timestamp(row.get("timestamp", 0.0), f"{where} field 'timestamp'")))
    return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: expected a finite number, got {shown(value)}")
    return float(value)


def _timestamp(value: Any, where: str) -> float:
    if isinstance(value, datetime):  # pandas.Timestamp is a datetime too
        return value.timestamp()
    return _number(value, where)
