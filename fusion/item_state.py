"""The writer's per-item caches (fusion/hybrid.py), as named records instead of positional tuples.

Item rows depend only on the item itself (and the fixed codebook, weights and constant groups),
so writers patch these caches instead of rebuilding a million rows in Python; readers never see
them (they read the published ``Snapshot``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fusion.codebook import SoftAssignment


@dataclass(frozen=True)
class ItemColumns:
    """Ids, types and id -> row of one ``HybridModel.items`` list (writers replace the list, never
    mutate it, so this is built once per list)."""

    items: list  # the HybridModel.items list these were built from
    ids: tuple[str, ...]
    types: np.ndarray  # (N,) str, read-only
    index: dict  # item id -> row

    @classmethod
    def of(cls, items: list) -> "ItemColumns":
        ids = tuple(it.item_id for it in items)
        types = np.array([it.type for it in items])
        types.flags.writeable = False
        return cls(items, ids, types, {iid: i for i, iid in enumerate(ids)})

    def extended(self, items: list) -> "ItemColumns":
        """Columns of ``items``, whose first ``len(self.ids)`` entries are this list's (C-speed copies)."""
        n_old = len(self.ids)
        added = items[n_old:]
        ids = self.ids + tuple(it.item_id for it in added)
        types = np.concatenate([self.types, np.array([it.type for it in added])])
        types.flags.writeable = False
        index = dict(self.index)
        index.update((iid, n_old + i) for i, iid in enumerate(ids[n_old:]))
        return ItemColumns(items, ids, types, index)


@dataclass(frozen=True)
class ItemRows:
    """Per item: its full soft cluster assignment (interests, explanations), the tokens LightFM
    sees (at most ``item_tokens`` clusters) and its LightFM feature row."""

    assign: SoftAssignment
    tokens: SoftAssignment
    features: sp.csr_matrix

    def appended(self, assign: SoftAssignment, tokens: SoftAssignment, features: sp.csr_matrix) -> "ItemRows":
        grown = sp.vstack([widen(self.features, features.shape[1]), features], format="csr")
        return ItemRows(concat_assign(self.assign, assign), concat_assign(self.tokens, tokens), grown)

    def kept(self, keep: np.ndarray) -> "ItemRows":
        """Only rows ``keep`` (bool mask)."""
        return ItemRows(SoftAssignment(self.assign.clusters[keep], self.assign.weights[keep]),
                        SoftAssignment(self.tokens.clusters[keep], self.tokens.weights[keep]), self.features[keep])

    def with_rows(self, changed: np.ndarray, features: sp.csr_matrix) -> "ItemRows":
        """Feature rows ``changed`` replaced by ``features``. A row gather over [old rows; new rows] keeps
        each row's column order (a full rebuild's), so scores match a rebuilt (e.g. reloaded) model
        bit for bit."""
        n = self.features.shape[0]
        order = np.arange(n)
        order[changed] = n + np.arange(len(changed))
        x = sp.vstack([widen(self.features, features.shape[1]), features], format="csr")[order]
        return ItemRows(self.assign, self.tokens, x)


@dataclass(frozen=True)
class ItemReprs:
    """LightFM item representations and biases computed from ``features`` with the LightFM item
    parameters of ``trained_version`` and the cold map (``cold_map``, ``cold_map_weight``).
    ``features`` may have grown since (items appended): its rows ``len(repr):`` are not represented yet."""

    features: sp.csr_matrix
    trained_version: int
    cold_map: object
    cold_map_weight: float
    repr: np.ndarray
    bias: np.ndarray

    def reusable_rows(self, features: sp.csr_matrix, trained_version: int, cold_map, cold_map_weight: float) -> int:
        """How many leading rows are still valid for these inputs (0: recompute everything)."""
        same = (self.features is features and self.trained_version == trained_version
                and self.cold_map is cold_map and self.cold_map_weight == cold_map_weight)
        return len(self.repr) if same else 0


def concat_assign(a: SoftAssignment, b: SoftAssignment) -> SoftAssignment:
    return SoftAssignment(np.concatenate([a.clusters, b.clusters]), np.concatenate([a.weights, b.weights]))


def widen(x: sp.csr_matrix, width: int) -> sp.csr_matrix:
    """``x`` with ``width`` columns (new feature columns are empty), sharing its arrays."""
    if x.shape[1] == width:
        return x
    return sp.csr_matrix((x.data, x.indices, x.indptr), shape=(x.shape[0], width))
