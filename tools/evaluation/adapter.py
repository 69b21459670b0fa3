"""``MixrecEvalModel``: the HybridModel behind the evaluation protocol (tools.evaluation.protocol).

Index-based in, ids inside: users/items of ``EvalData`` become ids for the
HybridModel, items with all-zero train columns get no identity feature (cold:
content only), and cold users are scored as queries (their liked items, plus
the query text when a text encoder is given).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from mixrec.catalog import Interaction
from mixrec.config import MixrecConfig
from tools.evaluation.protocol import EvalData, UserQuery
from fusion.features import FeatureWeights
from fusion.hybrid import HybridModel
from fusion.query import Query, QueryBlend
from fusion.scoring import popularity_prior, users_scores

TextEncoder = Callable[[list[str]], np.ndarray]


class MixrecEvalModel:
    def __init__(self, cfg: MixrecConfig, name: str = "mixrec", weights: FeatureWeights | None = None,
                 blend: QueryBlend | None = None, text_encoder: TextEncoder | None = None) -> None:
        self.cfg = cfg
        self.name = name
        self.weights = weights
        self.blend = blend
        self.text_encoder = text_encoder  # native text space of data.embeddings, for UserQuery.text
        self.model: HybridModel | None = None
        self.fit_seconds = 0.0
        self._data: EvalData | None = None
        self._rows: np.ndarray | None = None  # EvalData user index -> model user row (-1: unknown)

    def fit(self, data: EvalData, train: sp.csr_matrix) -> None:
        if data.embeddings is None:
            raise ValueError(f"{self.name}: EvalData.embeddings is required (encode the catalog first)")
        start = time.perf_counter()
        coo = sp.coo_matrix(train)
        keep = coo.data > 0
        interactions = [Interaction(data.user_ids[u], data.item_ids[i], "like", 1.0)
                        for u, i in zip(coo.row[keep], coo.col[keep])]
        items = [it if it.item_id == iid else it.model_copy(update={"item_id": iid})
                 for it, iid in zip(data.items, data.item_ids)]
        self.model = HybridModel.train(items, data.embeddings, interactions, self.cfg, weights=self.weights)
        if self.blend is not None:
            self.model.blend_weights = self.blend
        row_of = {uid: r for r, uid in enumerate(self.model.known_users())}
        self._rows = np.array([row_of.get(uid, -1) for uid in data.user_ids], np.int64)
        self._data = data
        self.fit_seconds = time.perf_counter() - start

    def score_users(self, users: np.ndarray) -> np.ndarray:
        snap = self._require().snapshot
        rows = self._rows[np.asarray(users, np.int64)]
        user_repr = np.where((rows >= 0)[:, None], snap.user_repr[np.maximum(rows, 0)], 0.0)
        return users_scores(snap, user_repr)

    def to_query(self, q: UserQuery) -> Query:
        data = self._data
        text_vec = None
        if q.text and self.text_encoder is not None:
            text_vec = np.asarray(self.text_encoder([q.text]), np.float32)[0]
        return Query(text_vec=text_vec, liked_item_ids=tuple(data.item_ids[int(i)] for i in q.liked_items))

    def score_queries(self, queries: Sequence[UserQuery]) -> np.ndarray:
        model = self._require()
        out = np.empty((len(queries), len(self._data.item_ids)), np.float64)
        for r, q in enumerate(queries):
            query = self.to_query(q)
            out[r] = model.score_all(query) if not query.is_empty() else popularity_prior(model.snapshot)
        return out

    def _require(self) -> HybridModel:
        if self.model is None:
            raise RuntimeError(f"{self.name}: fit() first")
        return self.model
