"""Content -> collaborative map for items with no interactions yet.

LightFM scores a cold item from its sparse content features only (a few
codebook tokens and tags), which throws away most of the dense shared-space
vector. So after each fit a ridge regression learns, on the warm items, to
predict each item's full LightFM representation and bias (identity included)
from its dense content: the shared-space vector plus its content-only LightFM
representation. Cold items are then scored with the predicted representation
(weighted towards the content-only one by ``blend``), so they land where
warm items with similar content live. Warm items are weighted by log
interaction counts: the representations of barely-seen items are mostly noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import RidgeCV

_ALPHAS = np.logspace(-2, 4, 13)
MIN_WARM_ITEMS = 20  # fewer than this: no map, cold items keep their content-only representation


@dataclass
class ContentToCollab:
    weight: np.ndarray  # (p, k + 1)
    bias: np.ndarray  # (k + 1,)
    x_mean: np.ndarray  # (p,)
    x_scale: np.ndarray  # (p,)

    @staticmethod
    def inputs(fused: np.ndarray, content_repr: np.ndarray, content_bias: np.ndarray) -> np.ndarray:
        return np.hstack([fused, content_repr, content_bias[:, None]]).astype(np.float64)

    @classmethod
    def fit(cls, x: np.ndarray, target: np.ndarray, counts: np.ndarray) -> "ContentToCollab | None":
        if len(x) < MIN_WARM_ITEMS:
            return None
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        ridge = RidgeCV(alphas=_ALPHAS).fit((x - mean) / scale, target, sample_weight=np.log1p(counts))
        return cls(ridge.coef_.T.astype(np.float32), np.asarray(ridge.intercept_, np.float32),
                   mean.astype(np.float32), scale.astype(np.float32))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = ((x - self.x_mean) / self.x_scale) @ self.weight + self.bias
        return y[:, :-1].astype(np.float32), y[:, -1].astype(np.float32)

    def arrays(self, prefix: str = "c2c_") -> dict[str, np.ndarray]:
        return {f"{prefix}weight": self.weight, f"{prefix}bias": self.bias, f"{prefix}x_mean": self.x_mean,
                f"{prefix}x_scale": self.x_scale}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "c2c_") -> "ContentToCollab | None":
        if f"{prefix}weight" not in arrays:
            return None
        return cls(*(np.asarray(arrays[f"{prefix}{n}"]) for n in ("weight", "bias", "x_mean", "x_scale")))
