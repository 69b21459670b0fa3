"""Reference models for the evaluation protocols (all implement ``EvalModel``).

* ``Popularity``    — train interaction counts; the same list for everyone.
* ``LightFMIds``    — plain LightFM, identity features only (collaborative filtering).
* ``LightFMGenres`` — LightFM hybrid: item = identity + tag features (row-normalised).

Cold users are folded in the standard way: their user vector is the mean of the
representations of the items they liked. Cold items (all-zero train columns):
``LightFMIds`` has nothing but their untrained id embeddings (it is reported as
is — that is the point of the baseline); ``LightFMGenres`` drops the untrained
identity feature and scores them from their tags alone.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from mixrec.config import ModelConfig
from tools.evaluation.protocol import EvalData, UserQuery

__all__ = ["LightFMParams", "Popularity", "LightFMIds", "LightFMGenres", "tag_features", "cold_item_mask"]


# The baselines get exactly the knobs of mixrec's own LightFM model (one definition, in the config).
LightFMParams = ModelConfig


def cold_item_mask(train: sp.spmatrix) -> np.ndarray:
    """Items with no training interaction: what a model may treat as cold, known at fit time."""
    return np.asarray((sp.csr_matrix(train) != 0).sum(axis=0)).ravel() == 0


def _l1_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to sum 1 (LightFM Dataset's ``normalize``); all-zero rows stay zero."""
    sums = np.asarray(m.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)) @ m,
                         dtype=np.float32)


def tag_features(data: EvalData) -> tuple[sp.csr_matrix, list[str]]:
    """(n_items x n_tags) binary matrix of ``Item.tags`` with the sorted tag vocabulary."""
    vocab = sorted({t for it in data.items for t in it.tags})
    col = {t: j for j, t in enumerate(vocab)}
    rows, cols = [], []
    for i, it in enumerate(data.items):
        for t in set(it.tags):
            rows.append(i)
            cols.append(col[t])
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(data.n_items, len(vocab)))
    return m, vocab


def _mean_rows(vectors: np.ndarray, index_lists: Sequence[np.ndarray]) -> np.ndarray:
    """Row r = mean of ``vectors[index_lists[r]]`` (zeros for an empty list)."""
    out = np.zeros((len(index_lists), vectors.shape[1]), dtype=np.float32)
    for r, idx in enumerate(index_lists):
        if len(idx):
            out[r] = vectors[np.asarray(idx, dtype=np.int64)].mean(axis=0)
    return out


class Popularity:
    """Everyone gets the items with the most training interactions."""

    def __init__(self, name: str = "popularity") -> None:
        self.name = name
        self.fit_seconds = 0.0
        self._counts: np.ndarray | None = None

    def fit(self, data: EvalData, train: sp.csr_matrix) -> None:
        start = time.perf_counter()
        self._counts = np.asarray((sp.csr_matrix(train) != 0).sum(axis=0), dtype=np.float32).ravel()
        self.fit_seconds = time.perf_counter() - start

    def _scores(self, n: int) -> np.ndarray:
        if self._counts is None:
            raise RuntimeError(f"{self.name}: fit() first")
        return np.broadcast_to(self._counts, (n, len(self._counts))).copy()

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self._scores(len(users))

    def score_queries(self, queries: Sequence[UserQuery]) -> np.ndarray:
        return self._scores(len(queries))


class _LightFMBase:
    """Fits LightFM on ``train`` and scores from precomputed representations."""

    def __init__(self, name: str, params: LightFMParams | None = None) -> None:
        self.name = name
        self.params = params or LightFMParams()
        self.fit_seconds = 0.0
        self.model = None
        self._user_vecs: np.ndarray | None = None
        self._item_vecs: np.ndarray | None = None
        self._item_bias: np.ndarray | None = None

    def _item_features(self, data: EvalData, train: sp.csr_matrix) -> sp.csr_matrix | None:
        return None  # identity only

    def _scoring_item_features(self, data: EvalData, train: sp.csr_matrix,
                               fit_features: sp.csr_matrix | None) -> sp.csr_matrix | None:
        return fit_features

    def fit(self, data: EvalData, train: sp.csr_matrix) -> None:
        train = sp.csr_matrix(train, dtype=np.float32)
        if train.shape != (data.n_users, data.n_items):
            raise ValueError(f"train shape {train.shape} != ({data.n_users}, {data.n_items})")
        start = time.perf_counter()
        features = self._item_features(data, train)
        from fusion.lightfm_state import new_lightfm  # imports lightfm: only the LightFM baselines need it

        self.model = new_lightfm(self.params)
        self.model.fit(train.tocoo(), item_features=features, epochs=self.params.epochs,
                       num_threads=self.params.num_threads)
        scoring = self._scoring_item_features(data, train, features)
        self._item_bias, self._item_vecs = self.model.get_item_representations(scoring)
        _, self._user_vecs = self.model.get_user_representations()
        self.fit_seconds = time.perf_counter() - start

    def _score(self, user_vecs: np.ndarray) -> np.ndarray:
        if self._item_vecs is None:
            raise RuntimeError(f"{self.name}: fit() first")
        # The user bias is constant per row and cannot change a ranking: left out.
        return user_vecs @ self._item_vecs.T + self._item_bias[None, :]

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self._score(self._user_vecs[np.asarray(users, dtype=np.int64)])

    def score_queries(self, queries: Sequence[UserQuery]) -> np.ndarray:
        return self._score(_mean_rows(self._item_vecs, [q.liked_items for q in queries]))


class LightFMIds(_LightFMBase):
    """Plain LightFM: one id embedding per user and per item."""

    def __init__(self, params: LightFMParams | None = None, name: str = "lightfm") -> None:
        super().__init__(name, params)


class LightFMGenres(_LightFMBase):
    """LightFM hybrid: item features = identity + ``Item.tags`` (genres on MovieLens), rows summing to 1."""

    def __init__(self, params: LightFMParams | None = None, name: str = "lightfm-genres") -> None:
        super().__init__(name, params)
        self.tag_names: list[str] = []
        self._tags: sp.csr_matrix | None = None

    def _item_features(self, data: EvalData, train: sp.csr_matrix) -> sp.csr_matrix:
        self._tags, self.tag_names = tag_features(data)
        return _l1_rows(sp.hstack([sp.identity(data.n_items, format="csr", dtype=np.float32), self._tags],
                                  format="csr"))

    def _scoring_item_features(self, data: EvalData, train: sp.csr_matrix,
                               fit_features: sp.csr_matrix | None) -> sp.csr_matrix:
        # Cold items: their identity column never saw a gradient, so score them
        # from their tags alone. The tag weights stay as in training (no
        # re-normalisation): on ml-100k that gives cold-item AUC ~0.69 against
        # ~0.66 when the tags are re-scaled to sum to 1.
        cold = cold_item_mask(train)
        if not cold.any():
            return fit_features
        column_scale = np.ones(fit_features.shape[1], dtype=np.float32)
        column_scale[:data.n_items][cold] = 0.0
        return sp.csr_matrix(fit_features @ sp.diags(column_scale), dtype=np.float32)
