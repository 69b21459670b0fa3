"""``ItemCatalog``: the catalogue's item metadata as columns, not one pydantic ``Item`` per row.

Types, categories and tags are integer codes over vocabularies the catalogue grows (tags as a CSR
of codes per row; type labels are the catalogue's own, "product" / "video" / "audio" in the demo);
ids, titles, descriptions and media paths live in string tables (UTF-8 bytes + end offsets, two numpy arrays),
so a saved catalogue is a handful of ``.npy`` files that load memory-mapped and workers on one host
share. An ``Item`` is built on demand for the few rows a response, explanation or checkpoint needs.

Columns are append-only (fusion/growable.py): adding items costs what they add. Removing items
marks their rows dead (``tombstone``: the id leaves the index, the row stays until compaction), so
a delete costs what it deletes plus a one-byte-per-row mask copy; ``kept`` builds the compacted
catalogue with vectorised gathers. Either way the old state stays intact for snapshots that still
hold it. ``view()`` gives the read side: an id sequence and an id -> row mapping bounded
to the rows published, which later appends never change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Iterable, NamedTuple

import numpy as np

from fusion.growable import Growable
from mixrec.catalog import DEMO_ITEM_TYPES, MAX_ITEM_TYPES, Item
from mixrec.errors import InputError

TEXT_FIELDS = ("title", "description")
MEDIA_FIELDS = ("image", "audio", "video")  # nullable


class ItemKeys(NamedTuple):
    item_id: str
    type: str
    tags: list[str]
    category: str | None


class StringColumn:
    """Strings as UTF-8 bytes + end offsets (optionally nullable), append-only."""

    def __init__(self, blob: np.ndarray, ends: np.ndarray, null: np.ndarray | None = None) -> None:
        self.blob, self.ends = Growable(blob), Growable(ends)
        self.null = None if null is None else Growable(null)

    @classmethod
    def of(cls, values: Sequence[str | None], nullable: bool = False) -> "StringColumn":
        col = cls(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, bool) if nullable else None)
        col.append(values)
        return col

    def append(self, values: Sequence[str | None]) -> None:
        encoded = [(v or "").encode() for v in values]
        lengths = np.fromiter((len(b) for b in encoded), np.int64, len(encoded))
        start = int(self.ends.view()[-1]) if len(self.ends) else 0
        self.blob.append(np.frombuffer(b"".join(encoded), np.uint8))
        self.ends.append(start + np.cumsum(lengths))
        if self.null is not None:
            self.null.append(np.fromiter((v is None for v in values), bool, len(values)))

    def __len__(self) -> int:
        return len(self.ends)

    def get(self, i: int) -> str | None:
        if self.null is not None and self.null.view()[i]:
            return None
        ends = self.ends.view()
        lo = int(ends[i - 1]) if i else 0
        return self.blob.view()[lo:int(ends[i])].tobytes().decode()

    def all(self) -> list[str]:
        """Every string (a column of ids at load time), decoded in one pass."""
        ends = self.ends.view()
        starts = np.concatenate([[0], ends[:-1]]).tolist()
        raw = self.blob.view().tobytes()
        return [raw[a:b].decode() for a, b in zip(starts, ends.tolist())]

    def head(self, n: int) -> "StringColumn":
        """Rows ``:n`` (views, no copy)."""
        ends = self.ends.view()[:n]
        return StringColumn(self.blob.view()[:int(ends[-1]) if n else 0], ends,
                            None if self.null is None else self.null.view()[:n])

    def kept(self, keep: np.ndarray) -> "StringColumn":
        ends = self.ends.view()
        starts = np.concatenate([[0], ends[:-1]])
        blob, new_ends = _gather_ranges(self.blob.view(), starts[keep], ends[keep])
        null = None if self.null is None else self.null.view()[keep].copy()
        return StringColumn(blob, new_ends, null)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}_bytes": self.blob.view(), f"{prefix}_ends": self.ends.view()}
        if self.null is not None:
            out[f"{prefix}_null"] = self.null.view()
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "StringColumn":
        return cls(arrays[f"{prefix}_bytes"], arrays[f"{prefix}_ends"], arrays.get(f"{prefix}_null"))


def _gather_ranges(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values[starts[0]:ends[0]] + values[starts[1]:ends[1]] + ...`` and the new end offsets, vectorised."""
    lengths = ends - starts
    new_ends = np.cumsum(lengths)
    total = int(new_ends[-1]) if len(new_ends) else 0
    # Position p of the output reads values[starts[r] + (p - new_start[r])] for the range r it falls in.
    shift = np.repeat(starts - (new_ends - lengths), lengths)
    return values[np.arange(total) + shift], new_ends.astype(np.int64)


class Vocabulary:
    """Strings <-> dense integer codes (categories, tags); codes are never reused or renumbered."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names: list[str] = list(names)
        self.codes = {n: c for c, n in enumerate(self.names)}

    def code(self, name: str) -> int:
        c = self.codes.get(name)
        if c is None:
            c = self.codes[name] = len(self.names)
            self.names.append(name)
        return c


class ItemCatalog:
    """All item metadata, row-aligned with the model's item arrays."""

    def __init__(self, ids: list[str], type_codes: np.ndarray, type_names: Vocabulary, category: np.ndarray,
                 categories: Vocabulary, tag_codes: np.ndarray, tag_ends: np.ndarray, tags: Vocabulary,
                 strings: dict[str, StringColumn]) -> None:
        self.ids = ids  # append-only list; rows past a view's length are invisible to it
        self._rows = {iid: i for i, iid in enumerate(ids)}  # id -> its newest row (dead ones too: see ``index``)
        if len(self._rows) != len(ids):
            raise ValueError("duplicate item ids in the catalogue")
        self.type_names = type_names
        self.type_codes = Growable(type_codes)
        self.types = Growable(self._names()[np.asarray(type_codes, np.int64)])
        self.category = Growable(category)
        self.categories = categories
        self.tag_codes, self.tag_ends = Growable(tag_codes), Growable(tag_ends)
        self.tags = tags
        self.strings = strings
        self.alive = Growable(np.ones(len(ids), bool))  # False: a tombstoned row (deleted, not yet compacted)
        self.n_dead = 0
        self._view: CatalogView | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def of(cls, items: Sequence[Item]) -> "ItemCatalog":
        cat = cls([], np.zeros(0, np.int8), Vocabulary(), np.zeros(0, np.int32), Vocabulary(), np.zeros(0, np.int32),
                  np.zeros(0, np.int64), Vocabulary(),
                  {f: StringColumn.of([], nullable=f in MEDIA_FIELDS) for f in (*TEXT_FIELDS, *MEDIA_FIELDS)})
        cat.append(items)
        return cat

    def append(self, items: Sequence[Item]) -> None:
        """Add rows for ``items`` (ids must be new: callers check first)."""
        n_old = len(self.ids)
        new = [t for t in dict.fromkeys(it.type for it in items) if t not in self.type_names.codes]
        if len(self.type_names.names) + len(new) > MAX_ITEM_TYPES:
            raise InputError(f"a catalogue holds at most {MAX_ITEM_TYPES} item types; it has "
                             f"{len(self.type_names.names)} and these items add {len(new)} ({new[:5]})")
        codes = np.fromiter((self.type_names.code(it.type) for it in items), np.int8, len(items))
        names = self._names()
        if names.dtype.itemsize > self.types.dtype.itemsize:  # a longer label: widen the column (once per such label)
            self.types = Growable(names[self.type_codes.view().astype(np.int64)])
        self.type_codes.append(codes)
        self.types.append(names[codes.astype(np.int64)])
        self.category.append(np.fromiter((-1 if it.category is None else self.categories.code(it.category)
                                          for it in items), np.int32, len(items)))
        tag_lists = [[self.tags.code(t) for t in it.tags] for it in items]
        start = int(self.tag_ends.view()[-1]) if len(self.tag_ends) else 0
        self.tag_codes.append(np.fromiter((c for row in tag_lists for c in row), np.int32))
        self.tag_ends.append(start + np.cumsum([len(row) for row in tag_lists], dtype=np.int64))
        for f, col in self.strings.items():
            col.append([getattr(it, f) for it in items])
        self.ids.extend(it.item_id for it in items)
        self._rows.update((it.item_id, n_old + r) for r, it in enumerate(items))
        self.alive.append(np.ones(len(items), bool))

    def tombstone(self, rows: Sequence[int]) -> None:
        """Mark ``rows`` deleted: their ids leave ``index`` (they can be added again, as new rows)
        and readers of later views skip them. The mask is copied, not written in place, so views
        published before keep theirs (and still resolve those ids)."""
        rows = np.asarray(rows, np.int64)
        alive = np.array(self.alive.view())
        if not alive[rows].all():
            raise ValueError("tombstone: a row is already dead")
        alive[rows] = False
        self.n_dead += len(rows)  # before the new mask: a reader that sees n_dead > 0 consults the mask
        self.alive = Growable(alive)
        self._view = None

    def kept(self, keep: np.ndarray) -> "ItemCatalog":
        """A new catalogue of rows ``keep`` (bool mask, no dead row in it); this one is left as it was."""
        keep = np.asarray(keep, bool)
        if self.n_dead and (keep & ~self.alive.view()).any():
            raise ValueError("kept: the rows to keep include tombstoned ones")
        ends = self.tag_ends.view()
        starts = np.concatenate([[0], ends[:-1]])
        tag_codes, tag_ends = _gather_ranges(self.tag_codes.view(), starts[keep], ends[keep])
        return ItemCatalog([i for i, k in zip(self.ids, keep.tolist()) if k], self.type_codes.view()[keep],
                           self.type_names, self.category.view()[keep], self.categories, tag_codes, tag_ends, self.tags,
                           {f: col.kept(keep) for f, col in self.strings.items()})

    # ------------------------------------------------------------------ reading
    @property
    def index(self) -> "Mapping[str, int]":
        """Item id -> row of the live items now (a tombstoned id is not in it). Safe beside the
        writer: ``append`` extends ``alive`` last, so its length counts rows fully written."""
        if not self.n_dead:  # the common case: the dict itself (a row is in it once its columns are written)
            return self._rows
        alive = self.alive.view()
        return RowIndex(self, len(alive), alive)

    def __len__(self) -> int:
        """Rows, the dead ones (not yet compacted) included: row-aligned with the model's item arrays."""
        return len(self.ids)

    @property
    def n_live(self) -> int:
        """Items in the catalogue now (rows minus tombstones)."""
        return len(self.ids) - self.n_dead

    def __getitem__(self, row: int | slice) -> Item | list[Item]:
        if isinstance(row, slice):  # a list's slice: the Items of those rows
            return [self.item(r) for r in range(*row.indices(len(self.ids)))]
        return self.item(row)

    def __iter__(self):
        return (self.item(r) for r in range(len(self.ids)))

    def tag_names(self, row: int) -> list[str]:
        ends = self.tag_ends.view()
        lo = int(ends[row - 1]) if row else 0
        return [self.tags.names[c] for c in self.tag_codes.view()[lo:int(ends[row])].tolist()]

    def keys(self, row: int) -> "ItemKeys":
        """What LightFM features are made of (id, type, tags, category), without building an ``Item``."""
        cat = int(self.category.view()[row])
        return ItemKeys(self.ids[row], self.type_names.names[int(self.type_codes.view()[row])], self.tag_names(row),
                        None if cat < 0 else self.categories.names[cat])

    def item(self, row: int) -> Item:
        """The ``Item`` of ``row``, built now (validated when it entered the catalogue)."""
        cat = int(self.category.view()[row])
        s = self.strings
        return Item.model_construct(item_id=self.ids[row], type=self.type_names.names[int(self.type_codes.view()[row])],
                                    title=s["title"].get(row), description=s["description"].get(row),
                                    tags=self.tag_names(row), category=None if cat < 0 else self.categories.names[cat],
                                    **{f: s[f].get(row) for f in MEDIA_FIELDS})

    def view(self) -> "CatalogView":
        """The rows of now (the same object until the next append, so unchanged items publish unchanged fields)."""
        v = self._view
        if v is None or v.n != len(self.ids):
            v = self._view = CatalogView(self, len(self.ids))
        return v

    # ------------------------------------------------------------------ persistence
    def arrays(self, n: int | None = None) -> dict[str, np.ndarray]:
        """The columns of rows ``:n`` (default all) as named arrays (fusion/artifacts.py saves them;
        the model exports a view with no dead rows, and later tombstones change no column)."""
        n = len(self.ids) if n is None else n
        tag_ends = self.tag_ends.view()[:n]
        out = {"item_type": self.type_codes.view()[:n], "item_category": self.category.view()[:n],
               "item_tag_codes": self.tag_codes.view()[:int(tag_ends[-1]) if n else 0], "item_tag_ends": tag_ends}
        out.update(StringColumn.of(self.ids[:n]).arrays("item_id"))
        for f, col in self.strings.items():
            out.update(col.head(n).arrays(f"item_{f}"))
        return out

    def vocabularies(self) -> dict[str, list[str]]:
        return {"types": self.type_names.names, "categories": self.categories.names, "tags": self.tags.names}

    def _names(self) -> np.ndarray:
        """The type labels by code, as a string array (indexed by a code column)."""
        return np.array(self.type_names.names or [""])

    @classmethod
    def from_arrays(cls, arrays, vocabularies: dict[str, list[str]]) -> "ItemCatalog":
        # Artifacts saved before type labels were the catalogue's own coded the demo's three types.
        types = Vocabulary(vocabularies.get("types", DEMO_ITEM_TYPES))
        return cls(StringColumn.from_arrays(arrays, "item_id").all(), arrays["item_type"], types,
                   arrays["item_category"], Vocabulary(vocabularies["categories"]), arrays["item_tag_codes"],
                   arrays["item_tag_ends"], Vocabulary(vocabularies["tags"]),
                   {f: StringColumn.from_arrays(arrays, f"item_{f}") for f in (*TEXT_FIELDS, *MEDIA_FIELDS)})


class CatalogView:
    """The first ``n`` rows of a catalogue, as a snapshot publishes them: ``ids`` (a sequence),
    ``index`` (id -> row), per-row ``Item`` on demand (``items[row]``) and the code columns."""

    def __init__(self, catalog: ItemCatalog, n: int) -> None:
        self.catalog, self.n = catalog, n
        self.ids = IdColumn(catalog.ids, n)
        self.alive = catalog.alive.view()  # (n,) bool: False for tombstoned rows, which no reader returns
        self.n_dead = catalog.n_dead
        self.index = RowIndex(catalog, n, self.alive if self.n_dead else None)
        self.types = catalog.types.view()  # exactly n rows: views are taken at publication
        self.type_codes = catalog.type_codes.view()
        self.type_names = tuple(catalog.type_names.names)  # code -> label; codes are never renumbered

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, row: int) -> Item:
        if not -self.n <= row < self.n:
            raise IndexError(row)
        return self.catalog.item(row % self.n)

    def __iter__(self):
        return (self.catalog.item(r) for r in range(self.n))

    def tag_csr(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(tag codes, end offsets per row, tag names) of these rows."""
        ends = self.catalog.tag_ends.view()[:self.n]
        last = int(ends[-1]) if self.n else 0
        return self.catalog.tag_codes.view()[:last], ends, self.catalog.tags.names


class IdColumn(Sequence):
    """The first ``n`` ids of an append-only list: ``len``, indexing, iteration and ``==`` like the
    tuple it replaces (a snapshot's ``item_ids``), without copying a million references per write."""

    __slots__ = ("_ids", "_n")

    def __init__(self, ids: list[str], n: int) -> None:
        self._ids, self._n = ids, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if start == 0 and step == 1:
                return IdColumn(self._ids, stop)
            return tuple(self._ids[start:stop:step])
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._ids[i % self._n]

    def __iter__(self):
        ids = self._ids
        return (ids[i] for i in range(self._n))

    def __eq__(self, other) -> bool:
        if isinstance(other, IdColumn) and other._ids is self._ids:  # prefixes of one append-only list
            return other._n == self._n
        if not isinstance(other, (IdColumn, tuple, list)):
            return NotImplemented
        return len(other) == self._n and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"IdColumn(n={self._n})"


class RowIndex(Mapping):
    """Item id -> row for live rows ``< n`` of a catalogue: a later append's ids are not in it, nor
    are rows ``alive`` marks dead (the mask the view was published with; None: all live)."""

    __slots__ = ("_catalog", "_n", "_alive")

    def __init__(self, catalog: ItemCatalog, n: int, alive: np.ndarray | None = None) -> None:
        self._catalog, self._n, self._alive = catalog, n, alive

    def get(self, key, default=None):
        row = self._catalog._rows.get(key)
        return row if row is not None and row < self._n and (self._alive is None or self._alive[row]) else default

    def __getitem__(self, key) -> int:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __iter__(self):
        ids = IdColumn(self._catalog.ids, self._n)
        if self._alive is None:
            return iter(ids)
        return (ids[r] for r in np.flatnonzero(self._alive).tolist())

    def __len__(self) -> int:
        return self._n if self._alive is None else int(self._alive.sum())
