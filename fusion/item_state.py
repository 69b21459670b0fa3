"""The writer's per-item caches (fusion/hybrid.py), as named records instead of positional tuples.

Item rows depend only on the item itself (and the fixed codebook, weights and constant groups),
so writers patch these caches instead of rebuilding a million rows in Python; readers never see
them (they read the published ``Snapshot``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from fusion.codebook import SoftAssignment
from fusion.growable import Growable, GrowingCSR
from fusion.rows import with_rows


@dataclass(frozen=True)
class ItemRows:
    """Per item: its full soft cluster assignment (interests, explanations), the tokens LightFM
    sees (at most ``item_tokens`` clusters) and its LightFM feature row."""

    assign: SoftAssignment
    tokens: SoftAssignment
    features: sp.csr_matrix
    buffers: "RowBuffers | None" = field(default=None, compare=False, repr=False)

    def appended(self, assign: SoftAssignment, tokens: SoftAssignment, features: sp.csr_matrix) -> "ItemRows":
        """These rows and new ones, written into append-only buffers (O(new rows), amortised)."""
        b = self.buffers if self.buffers is not None and self.buffers.ends_with(self) else RowBuffers(self)
        return b.append(assign, tokens, features)

    def kept(self, keep: np.ndarray) -> "ItemRows":
        """Only rows ``keep`` (bool mask)."""
        return ItemRows(SoftAssignment(self.assign.clusters[keep], self.assign.weights[keep]),
                        SoftAssignment(self.tokens.clusters[keep], self.tokens.weights[keep]), self.features[keep])

    def with_rows(self, changed: np.ndarray, features: sp.csr_matrix) -> "ItemRows":
        """Feature rows ``changed`` replaced by ``features``. A row gather over [old rows; new rows] keeps
        each row's column order (a full rebuild's), so scores match a rebuilt (e.g. reloaded) model
        bit for bit."""
        return ItemRows(self.assign, self.tokens, with_rows(self.features, changed, features, features.shape[1]))


class RowBuffers:
    """The append-only buffers one line of ``ItemRows`` shares (each ``appended`` extends them)."""

    def __init__(self, rows: ItemRows) -> None:
        self.assign = (Growable(rows.assign.clusters), Growable(rows.assign.weights))
        self.tokens = (Growable(rows.tokens.clusters), Growable(rows.tokens.weights))
        self.features = GrowingCSR(rows.features)
        self._last: ItemRows | None = None

    def ends_with(self, rows: ItemRows) -> bool:
        return rows is self._last

    def append(self, assign: SoftAssignment, tokens: SoftAssignment, features: sp.csr_matrix) -> ItemRows:
        for (c, w), new in ((self.assign, assign), (self.tokens, tokens)):
            c.append(new.clusters)
            w.append(new.weights)
        self.features.append(features)
        self._last = ItemRows(SoftAssignment(self.assign[0].view(), self.assign[1].view()),
                              SoftAssignment(self.tokens[0].view(), self.tokens[1].view()),
                              self.features.matrix(), self)
        return self._last


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

