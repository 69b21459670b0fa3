"""The contract between evaluation protocols and the models they compare.

Everything is index-based: users 0..n_users-1, items 0..n_items-1 over the
whole catalog (cold items included). A model receives the full content of the
catalog up front (``EvalData``) and only the training interactions in ``fit``.

* warm:       fit on train, score known users over all items.
* cold items: a share of items has no interaction in ``train`` at all; the model
              must score them from content (it may infer which ones are cold
              from the all-zero columns of ``train``: that is known at training time).
* cold users: held-out users have all-zero rows in ``train``; each is described
              only by a few "known" items it liked (and optionally a text query)
              and is scored with ``score_queries``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import scipy.sparse as sp

from mixrec.catalog import Item
from mixrec.embeddings import ItemEmbeddings


@dataclass
class EvalData:
    user_ids: list[str]
    item_ids: list[str]
    items: list[Item]  # aligned with item_ids: text, tags, category, type
    embeddings: ItemEmbeddings | None = None  # aligned with item_ids when present
    extra: dict = field(default_factory=dict)  # dataset-specific (e.g. MovieLens genres matrix)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


@dataclass
class UserQuery:
    """What a cold user told us: items they liked (indices) and/or a free-text description."""

    liked_items: np.ndarray  # int item indices, possibly empty
    text: str | None = None


class EvalModel(Protocol):
    name: str

    def fit(self, data: EvalData, train: sp.csr_matrix) -> None:
        """Train on ``train`` (n_users x n_items, implicit weights > 0)."""

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores of shape (len(users), n_items), higher is better, for users seen in training."""

    def score_queries(self, queries: Sequence[UserQuery]) -> np.ndarray:
        """Scores of shape (len(queries), n_items) for users with no training history."""
