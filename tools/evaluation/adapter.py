"""``MixrecEvalModel``: the HybridModel behind the evaluation protocol (tools.evaluation.protocol).

Index-based in, ids inside: users/items of ``EvalData`` become ids for the
HybridModel. Items with all-zero train columns are cold: the model is trained without
them and they are added afterwards through ``HybridModel.add_items``, the path the
service takes for a new item. Cold users are scored as queries (their liked items, plus
the query text when a text encoder is given). ``calibrate`` (off / fast / full) trains
through fusion.calibration.train_model, the one training path of ``mixrec train``;
the interactions carry the dataset's timestamps when ``EvalData.extra["interactions"]``
has them, so calibration can hold out by time.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from mixrec.catalog import Interaction
from mixrec.config import MixrecConfig
from tools.evaluation.protocol import EvalData, UserQuery
from fusion.calibration import CalibrationReport, train_model
from fusion.features import FeatureWeights
from fusion.hybrid import HybridModel
from fusion.query import Query, QueryBlend
from fusion.scoring import popularity_prior, users_scores

TextEncoder = Callable[[list[str]], np.ndarray]


class MixrecEvalModel:
    def __init__(self, cfg: MixrecConfig, name: str = "mixrec", weights: FeatureWeights | None = None,
                 blend: QueryBlend | None = None, text_encoder: TextEncoder | None = None,
                 calibrate: str = "off") -> None:
        self.cfg = cfg
        self.calibrate = calibrate
        self.report: CalibrationReport | None = None
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
        interactions = likes_from_matrix(data, train)
        items = [it if it.item_id == iid else it.model_copy(update={"item_id": iid})
                 for it, iid in zip(data.items, data.item_ids)]
        trained = np.asarray((sp.csr_matrix(train) > 0).sum(axis=0)).ravel() > 0
        warm_items = [it for it, t in zip(items, trained) if t]
        if self.calibrate == "off" or self.weights is not None:
            self.model = HybridModel.train(warm_items, data.embeddings, interactions, self.cfg, weights=self.weights)
        else:
            self.model, self.report = train_model(warm_items, data.embeddings, interactions, self.cfg,
                                                  calibrate=self.calibrate)
        if self.blend is not None:
            self.model.set_scoring_knobs(blend=self.blend)
        # Items nobody touched in training arrive later, as in production: through add_items.
        self.model.add_items([it for it, t in zip(items, trained) if not t], data.embeddings)
        snap = self.model.snapshot
        self._columns = np.array([snap.item_index[iid] for iid in data.item_ids], np.int64)
        row_of = {uid: r for r, uid in enumerate(self.model.known_users())}
        self._rows = np.array([row_of.get(uid, -1) for uid in data.user_ids], np.int64)
        self._data = data
        self.fit_seconds = time.perf_counter() - start

    def score_users(self, users: np.ndarray) -> np.ndarray:
        snap = self._require().snapshot
        rows = self._rows[np.asarray(users, np.int64)]
        user_repr = np.where((rows >= 0)[:, None], snap.user_repr[np.maximum(rows, 0)], 0.0)
        return users_scores(snap, user_repr)[:, self._columns]

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
            scores = model.score_all(query) if not query.is_empty() else popularity_prior(model.snapshot)
            out[r] = scores[self._columns]
        return out

    def _require(self) -> HybridModel:
        if self.model is None:
            raise RuntimeError(f"{self.name}: fit() first")
        return self.model


def likes_from_matrix(data: EvalData, matrix: sp.spmatrix) -> list[Interaction]:
    """The positive entries of a users x items ``matrix`` as "like" interactions with ids, carrying the
    dataset's timestamps (``_timestamps``): what ``train_model`` and ``HybridModel.train`` take."""
    coo = sp.coo_matrix(matrix)
    keep = coo.data > 0
    users, cols = coo.row[keep], coo.col[keep]
    return [Interaction(data.user_ids[u], data.item_ids[i], "like", 1.0, float(t))
            for u, i, t in zip(users, cols, _timestamps(data, users, cols))]


def _timestamps(data: EvalData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Timestamps of the (user, item) pairs from ``data.extra["interactions"]`` (the latest per
    pair), zeros when the dataset has none."""
    log = data.extra.get("interactions")
    if log is None or not hasattr(log, "timestamps") or len(log) == 0:
        return np.zeros(len(users))
    n = data.n_items
    keys = np.asarray(log.users, np.int64) * n + np.asarray(log.items, np.int64)
    order = np.lexsort((log.timestamps, keys))
    keys, ts = keys[order], np.asarray(log.timestamps, np.float64)[order]
    last = np.r_[keys[1:] != keys[:-1], True]
    keys, ts = keys[last], ts[last]
    want = np.asarray(users, np.int64) * n + np.asarray(items, np.int64)
    pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    return np.where(keys[pos] == want, ts[pos], 0.0)
