"""From a score vector over the catalog to the final list: filters, type mix, diversity.

Pure numpy. The Recommender scores every candidate (exactly or through
``mixrec.ann``) and hands the scores here with the catalog's metadata
(``ItemTable``); ``rank`` returns row indices into that table, best first.

Mix (``parse_mix``):
  * ``None`` / ``"score"``   — plain ranking by score across all types.
  * ``"interleave"``         — round-robin over the types in play (the filter's types, else all
                               the table's known types: the catalogue's own labels),
                               the type with the best top item first; a type that runs out
                               drops out of the rotation.
  * ``{"product": 5, "video": 3, "audio": 2}`` — exact per-type counts (ints; must add up to k).
  * ``{"product": 0.5, "audio": 0.5}``         — proportions (floats; must add up to 1), turned into
                               counts for k by the largest-remainder method.
  Types left out of a mapping get no slots. Quota results are interleaved in proportion to the
  quotas (smooth weighted round-robin), so every prefix of the list keeps the mix as well as it can.

Shortfall (a type has fewer candidates than its quota): ``shortfall="fill"`` (default) gives its
slots to the best remaining candidates of the other types named in the mix, appended at the end;
``shortfall="drop"`` returns fewer than k. Types not named in the mix are never used to fill.

Diversity: ``diversity`` is MMR's lambda in [0, 1]. Each pick maximises
``(1 - lambda) * score' - lambda * max cosine(item, already picked)`` where ``score'`` is the score
min-max scaled over the candidate pool; 0 is pure score order, 1 ignores scores. MMR looks at the
best ``pool_factor * k`` candidates of each type.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from mixrec.errors import InputError, shown, shown_list

MixMode = Literal["score", "interleave", "quota"]


@dataclass(frozen=True)
class MixSpec:
    mode: MixMode
    types: tuple[str, ...]  # the types that get slots, in the order given
    quotas: dict[str, int] = field(default_factory=dict)  # quota mode: exact counts adding up to k


@dataclass(frozen=True)
class Ranking:
    indices: np.ndarray  # int64 rows of the ItemTable, best first
    scores: np.ndarray  # the caller's scores for those rows

    def __len__(self) -> int:
        return int(self.indices.size)


class ItemTable:
    """Per-row item metadata aligned with the score vector: ids, types and tags.

    ``known``: every type label the catalogue has (what filters and mixes are checked against; a
    table of candidates may lack some of them); default: the types of its rows."""

    def __init__(self, ids: Sequence[str], types: Sequence[str], tags: Sequence[Iterable[str]] | None = None,
                 known: Sequence[str] | None = None):
        if len(ids) != len(types) or (tags is not None and len(tags) != len(ids)):
            raise ValueError("ids, types and tags must have one entry per item")
        self.ids = np.asarray(list(ids), dtype=object)
        self.types = np.asarray(list(types), dtype=object)
        self.known = tuple(dict.fromkeys(self.types.tolist())) if known is None else tuple(known)
        unknown = set(self.types.tolist()) - set(self.known)
        if unknown:
            raise ValueError(f"unknown item types {sorted(unknown)}; known types: {list(self.known)}")
        self._row = {iid: i for i, iid in enumerate(self.ids.tolist())}
        if len(self._row) != len(self.ids):
            raise ValueError("item ids must be unique")
        by_tag: dict[str, list[int]] = {}
        for i, item_tags in enumerate(tags or ()):
            for t in set(item_tags):
                by_tag.setdefault(t, []).append(i)
        self._by_tag = {t: np.asarray(rows, dtype=np.int64) for t, rows in by_tag.items()}

    @classmethod
    def from_items(cls, items: Sequence) -> "ItemTable":
        """From ``mixrec.catalog.Item`` objects (anything with item_id, type, tags)."""
        return cls([it.item_id for it in items], [it.type for it in items], [it.tags for it in items])

    def __len__(self) -> int:
        return int(self.ids.size)

    def row(self, item_id: str) -> int | None:
        return self._row.get(item_id)

    def mask(self, types: Sequence[str] | None = None, tags: Sequence[str] | None = None,
             exclude_ids: Iterable[str] | None = None) -> np.ndarray:
        """Rows that pass the filters: any of ``types``, any of ``tags``, none of ``exclude_ids``."""
        keep = np.ones(len(self), dtype=bool)
        if types:
            check_types(types, "types filter", self.known)
            keep &= np.isin(self.types, list(types))
        if tags:
            has_tag = np.zeros(len(self), dtype=bool)
            for t in tags:
                rows = self._by_tag.get(t)
                if rows is not None:
                    has_tag[rows] = True
            keep &= has_tag
        if exclude_ids:
            rows = [r for r in (self._row.get(i) for i in exclude_ids) if r is not None]
            keep[rows] = False
        return keep


def check_types(types: Iterable[str], what: str, known: Sequence[str]) -> None:
    """InputError naming the labels of ``types`` that are not among the catalogue's ``known`` ones."""
    unknown = [t for t in types if t not in known]
    if unknown:
        raise InputError(f"{what}: unknown item type(s) {shown_list(unknown)}; this catalogue's types: "
                         f"{shown_list(list(known))}")


def _largest_remainder(props: dict[str, float], k: int) -> dict[str, int]:
    exact = {t: p * k for t, p in props.items()}
    counts = {t: math.floor(v) for t, v in exact.items()}
    left = k - sum(counts.values())
    # Stable sort: equal remainders go to the type named first.
    for t in sorted(exact, key=lambda t: exact[t] - counts[t], reverse=True)[:left]:
        counts[t] += 1
    return counts


def parse_mix(mix: str | Mapping[str, float] | None, k: int, types: Sequence[str] | None = None, *,
              known: Sequence[str]) -> MixSpec:
    """Validate a mix for a request of ``k`` items over a catalogue whose type labels are ``known``;
    ValueError messages name what is wrong."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer, got {shown(k)}")
    if types:
        check_types(types, "types filter", known)
    in_play = tuple(dict.fromkeys(types)) if types else tuple(known)
    if mix is None or mix == "score":
        return MixSpec("score", in_play)
    if mix == "interleave":
        return MixSpec("interleave", in_play)
    if isinstance(mix, str):
        a, b = (list(known) + ["product", "video"])[:2] if len(known) != 1 else (known[0], known[0])
        counts = {a: k} if a == b else {a: k - k // 2, b: k // 2}
        raise InputError(f"unknown mix {shown(mix)}: use 'score', 'interleave', per-type counts such as "
                         f"{counts} or proportions such as {({a: 1.0} if a == b else {a: 0.5, b: 0.5})}")
    if not isinstance(mix, Mapping) or not mix:
        raise InputError("mix must be 'score', 'interleave' or a non-empty mapping of item type to count/proportion")
    check_types(mix, "mix", known)
    outside = [t for t in mix if t not in in_play]
    if outside:
        raise InputError(f"mix names type(s) {outside} that the types filter {list(in_play)} excludes")
    for t, v in mix.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise InputError(f"mix[{t!r}] must be a number, got {shown(v)}")
        # An int too large for a float would raise OverflowError in isfinite: bound counts by k first.
        if isinstance(v, (int, np.integer)) and not 0 <= v <= k:
            raise InputError(f"mix[{t!r}] is a count and must be >= 0 and <= k={k}, got {shown(v, 40)}")
        if not math.isfinite(v) or v < 0:
            raise InputError(f"mix[{t!r}] must be a finite number >= 0, got {shown(v, 40)}")
    if all(isinstance(v, (int, np.integer)) for v in mix.values()):
        total = int(sum(mix.values()))
        if total != k:
            raise InputError(f"mix counts add up to {total} but k={k}: make them add up to k, "
                             f"or give proportions (floats adding up to 1)")
        quotas = {t: int(v) for t, v in mix.items()}
    else:
        total = float(sum(mix.values()))
        if abs(total - 1.0) > 1e-6:
            raise InputError(f"mix proportions add up to {total:g}, not 1 (use ints for exact counts)")
        quotas = _largest_remainder({t: float(v) for t, v in mix.items()}, k)
    active = tuple(t for t, q in quotas.items() if q > 0)
    return MixSpec("quota", active, {t: quotas[t] for t in active})


def rank(scores: np.ndarray, table: ItemTable, k: int, *, types: Sequence[str] | None = None,
         tags: Sequence[str] | None = None, exclude_ids: Iterable[str] | None = None,
         allowed: np.ndarray | None = None, mix: str | Mapping[str, float] | None = None,
         diversity: float = 0.0, vectors: np.ndarray | None = None,
         shortfall: Literal["fill", "drop"] = "fill", pool_factor: int = 5) -> Ranking:
    """Pick up to k rows of ``table`` by ``scores`` under the filters, the mix and the diversity knob.

    ``allowed`` is an extra boolean row mask (e.g. rows of deleted items are False). Rows whose
    score is not finite are never returned. ``vectors`` (one row per item) are needed when
    ``diversity > 0``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(table),):
        raise ValueError(f"scores has shape {scores.shape}; expected ({len(table)},)")
    if not 0.0 <= diversity <= 1.0:
        raise InputError(f"diversity must be in [0, 1], got {diversity!r}")
    if diversity > 0 and (vectors is None or len(vectors) != len(table)):
        raise ValueError("diversity > 0 needs one vector per item")
    if shortfall not in ("fill", "drop"):
        raise ValueError(f"shortfall must be 'fill' or 'drop', got {shortfall!r}")
    spec = parse_mix(mix, k, types, known=table.known)

    keep = table.mask(types, tags, exclude_ids) & np.isfinite(scores)
    if allowed is not None:
        keep &= np.asarray(allowed, dtype=bool)
    if spec.mode == "score":
        groups = [("*", np.flatnonzero(keep), k)]
    else:
        groups = [(t, np.flatnonzero(keep & (table.types == t)), spec.quotas.get(t, k)) for t in spec.types]
    pool = k if diversity == 0 else max(k * pool_factor, 50)
    return _select(scores, groups, k, pool, diversity, vectors, spec.mode == "quota", shortfall == "fill")


def top_k(scores: np.ndarray, n: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The (up to) n best of ``rows`` (default: every row) by score, best first; ties keep row
    order (deterministic); rows whose score is not finite never count. The one top-k of mixrec:
    scoring, candidate selection and ranking all pick through it."""
    scores = np.asarray(scores)
    rows = np.arange(scores.shape[0]) if rows is None else np.asarray(rows, np.int64)
    ok = np.isfinite(scores[rows])
    if not ok.all():
        rows = rows[ok]
    if n <= 0:
        return rows[:0]
    if rows.size > n:
        part = np.argpartition(-scores[rows], n - 1)[:n]
        rows = np.sort(rows[part])
    return rows[np.argsort(-scores[rows], kind="stable")]


def _select(scores, groups, k, pool, diversity, vectors, weighted, fill) -> Ranking:
    tops = [top_k(scores, pool, rows) for _, rows, _ in groups]
    cand = np.concatenate(tops) if tops else np.zeros(0, dtype=np.int64)
    bounds = np.cumsum([0] + [t.size for t in tops])
    if cand.size == 0:
        return Ranking(np.zeros(0, dtype=np.int64), np.zeros(0))
    s = scores[cand]
    span = s.max() - s.min()
    gain = (1.0 - diversity) * ((s - s.min()) / span if span > 0 else np.zeros_like(s))
    if diversity > 0:
        vec = np.asarray(vectors, dtype=np.float64)[cand]
        vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        max_sim = np.zeros(cand.size)
    taken = np.zeros(cand.size, dtype=bool)

    n = len(groups)
    # Smooth weighted round-robin: quota sizes as weights (or equal), ties to the type whose best item is best.
    order = sorted(range(n), key=lambda g: -scores[tops[g][0]] if tops[g].size else math.inf)
    weight = [float(groups[g][2]) if weighted else 1.0 for g in range(n)]
    remaining = [groups[g][2] for g in range(n)]
    left = [t.size for t in tops]
    credit = [0.0] * n
    picked: list[int] = []

    def best(lo: int, hi: int) -> int:
        value = gain[lo:hi] - (diversity * max_sim[lo:hi] if diversity > 0 else 0.0)
        value = np.where(taken[lo:hi], -np.inf, value)
        return lo + int(np.argmax(value))

    while len(picked) < k:
        eligible = [g for g in order if remaining[g] > 0 and left[g] > 0]
        if eligible:
            total = sum(weight[g] for g in eligible)
            for g in eligible:
                credit[g] += weight[g]
            g = max(eligible, key=lambda g: credit[g])
            credit[g] -= total
            remaining[g] -= 1
            pos = best(bounds[g], bounds[g + 1])
        elif fill and any(left):
            pos = best(0, cand.size)
            g = int(np.searchsorted(bounds, pos, side="right") - 1)
        else:
            break
        taken[pos] = True
        left[g] -= 1
        picked.append(pos)
        if diversity > 0:
            np.maximum(max_sim, vec @ vec[pos], out=max_sim)
    rows = cand[np.asarray(picked, dtype=np.int64)]
    return Ranking(rows.astype(np.int64), scores[rows])
