"""LightFM model state as plain numpy arrays: build, grow, save and restore without pickle."""

from __future__ import annotations

import numpy as np
from lightfm import LightFM

from mixrec.config import ModelConfig

# The attributes LightFM's own _initialize sets; together they are the full training state
# (embeddings, biases and the adagrad/adadelta accumulators fit_partial continues from).
STATE_ATTRS = (
    "item_embeddings", "item_embedding_gradients", "item_embedding_momentum",
    "item_biases", "item_bias_gradients", "item_bias_momentum",
    "user_embeddings", "user_embedding_gradients", "user_embedding_momentum",
    "user_biases", "user_bias_gradients", "user_bias_momentum",
)


def new_lightfm(cfg: ModelConfig) -> LightFM:
    return LightFM(no_components=cfg.no_components, loss=cfg.loss, learning_rate=cfg.learning_rate,
                   item_alpha=cfg.item_alpha, user_alpha=cfg.user_alpha, max_sampled=cfg.max_sampled,
                   random_state=np.random.RandomState(cfg.seed))


def is_initialised(model: LightFM) -> bool:
    return model.item_embeddings is not None


def grow(model: LightFM, n_item_features: int, n_user_features: int) -> None:
    """Append rows for features added since the last fit (LightFM requires fixed widths per call).

    New rows start at zero embedding/bias, so a new feature changes no score until it is
    trained; accumulators start where LightFM's own initialisation puts them.
    """
    if not is_initialised(model):
        return
    adagrad = model.learning_schedule == "adagrad"
    for side, n in (("item", n_item_features), ("user", n_user_features)):
        emb = getattr(model, f"{side}_embeddings")
        extra = n - emb.shape[0]
        if extra <= 0:
            continue
        k = emb.shape[1]
        for suffix, shape, fill in (("embeddings", (extra, k), 0.0), ("embedding_gradients", (extra, k), 1.0 if adagrad else 0.0),
                                    ("embedding_momentum", (extra, k), 0.0), ("biases", (extra,), 0.0),
                                    ("bias_gradients", (extra,), 1.0 if adagrad else 0.0), ("bias_momentum", (extra,), 0.0)):
            name = f"{side}_{suffix}"
            old = getattr(model, name)
            setattr(model, name, np.concatenate([old, np.full(shape, fill, np.float32)]).astype(np.float32))


def clear_rows(model: LightFM, side: str, rows: list[int]) -> None:
    """Erase what was learned for some features (forgetting a user's identity)."""
    if not rows or not is_initialised(model):
        return
    adagrad = model.learning_schedule == "adagrad"
    for suffix in ("embeddings", "embedding_gradients", "embedding_momentum", "biases", "bias_gradients", "bias_momentum"):
        arr = getattr(model, f"{side}_{suffix}")
        arr[rows] = 1.0 if (adagrad and "gradients" in suffix) else 0.0


def state_arrays(model: LightFM, prefix: str = "lfm_") -> dict[str, np.ndarray]:
    return {prefix + a: np.asarray(getattr(model, a)) for a in STATE_ATTRS} if is_initialised(model) else {}


def restore(cfg: ModelConfig, arrays, prefix: str = "lfm_") -> LightFM:
    model = new_lightfm(cfg)
    if prefix + STATE_ATTRS[0] in arrays:
        for a in STATE_ATTRS:
            # A private, writable copy: fit_partial trains these in place (the saved ones may be memory-mapped).
            setattr(model, a, np.array(arrays[prefix + a], dtype=np.float32, order="C"))
        if model.item_embeddings.shape[1] != cfg.no_components:
            raise ValueError(f"saved LightFM state has {model.item_embeddings.shape[1]} components, "
                             f"config says {cfg.no_components}")
    return model
