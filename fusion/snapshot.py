"""``Snapshot``: the published, immutable read model of a trained HybridModel.

The model's writer (fusion/hybrid.py) trains and publishes; everything that reads
(fusion/scoring.py, the Recommender's ranking pipeline, the ANN layer, the CLI,
evaluation) takes one ``Snapshot`` and uses only it. A snapshot is never mutated
after publication (its arrays are shared, read-only), so a reader that holds one
sees one consistent model while the writer trains and publishes the next.

The seam is LightFM's ``get_item_representations``: ``item_representations()``
gives (biases, embeddings) with the item features already applied, and a known
user's score is ``item_repr @ user + item_bias`` (computed in fusion/scoring.py,
nowhere else).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fusion.codebook import SoftAssignment
from mixrec.errors import NotFoundError, shown


class UnknownUserError(NotFoundError):
    """The model has no such user (404 when it reaches the service)."""


class UnknownItemError(NotFoundError):
    """The model has no such item (404 when it reaches the service)."""


@dataclass(frozen=True)
class Snapshot:
    """Everything scoring needs, row-aligned: item rows ``0..N-1``, user rows ``0..U-1``.

    Items: ``item_ids`` / ``item_types`` / ``item_index`` (id -> row); ``items`` their metadata columns
    (``items[row]`` builds that row's ``Item``). ``item_ids`` is a sequence (``len``, indexing, ``==``
    with another sequence of ids) and ``item_index`` a read-only mapping: views of append-only
    columns bounded to this snapshot's rows, so publishing appended items copies neither;
    ``item_repr`` (N, k) and
    ``item_bias`` (N,) are LightFM's item representations (cold items mapped from content);
    ``fused`` (N, D) the unit shared-space vectors (zero rows for items without content), with
    ``per_modality`` / ``masks`` the per-modality projections; ``item_assign`` the soft interest
    clusters; ``counts`` (N,) positives per item.

    Users: ``user_ids`` / ``user_index``; ``user_repr`` (U, k) / ``user_bias`` (U,) their LightFM
    vectors; ``user_trained`` (U,) whether the user's row was in the last training run;
    ``user_interest`` (U, K) interest distribution from history; ``seen`` (U, N) binary positives.

    Query users: ``user_feature_emb`` (Fu, k) / ``user_feature_bias`` (Fu,) per user-feature
    embeddings; ``user_cluster_cols`` (K,) the user-feature column of interest token ``c:<k>``
    (-1 when absent).
    """

    item_ids: tuple[str, ...]
    item_types: np.ndarray
    item_repr: np.ndarray
    item_bias: np.ndarray
    user_ids: tuple[str, ...]
    user_repr: np.ndarray
    user_bias: np.ndarray
    user_feature_emb: np.ndarray
    user_feature_bias: np.ndarray
    user_cluster_cols: np.ndarray
    seen: sp.csr_matrix
    counts: np.ndarray
    fused: np.ndarray
    per_modality: dict
    masks: dict
    item_assign: SoftAssignment
    user_interest: np.ndarray
    item_index: dict
    user_index: dict
    user_trained: np.ndarray
    items: object = None  # fusion.item_catalog.CatalogView: the metadata of rows 0..N-1 (Items on demand)

    @property
    def alive(self) -> np.ndarray | None:
        """(N,) bool, False for the rows of deleted items not yet compacted away (tombstones, which
        no reader returns); None when every row is live."""
        items = self.items
        return items.alive if items is not None and getattr(items, "n_dead", 0) else None

    @property
    def type_names(self) -> tuple[str, ...]:
        """The item type labels this model knows (the catalogue's own), in code order."""
        return self.items.type_names if self.items is not None else tuple(dict.fromkeys(self.item_types.tolist()))

    def item_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """(biases (N,), embeddings (N, k)), as LightFM's ``get_item_representations``."""
        return self.item_bias, self.item_repr

    def user_row(self, user_id: str) -> int:
        row = self.user_index.get(user_id)
        if row is None:
            raise UnknownUserError(f"unknown user {shown(user_id)}")
        return row

    def item_row(self, item_id: str) -> int:
        row = self.item_index.get(item_id)
        if row is None:
            raise UnknownItemError(f"unknown item {shown(item_id)}")
        return row

    def seen_rows(self, user_row: int | None) -> np.ndarray:
        """Item rows the user has positives on (empty for no user)."""
        if user_row is None:
            return np.zeros(0, np.int64)
        return self.seen[user_row].indices.astype(np.int64)
