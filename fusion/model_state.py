"""``ModelState``: everything a HybridModel is made of, as one plain record.

``HybridModel.export_state()`` gives one (a consistent copy, taken under the writer's lock) and
``HybridModel.from_state()`` builds a model from one; fusion/artifacts.py saves and loads it. So
persistence never reaches into the model's attributes, and artifacts.py does not import the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from lightfm import LightFM

from fusion.codebook import Codebook
from fusion.cold_items import ContentToCollab
from fusion.features import FeatureIndex, FeatureWeights
from fusion.item_state import ItemRows
from fusion.query import QueryBlend
from fusion.shared_space import SharedSpace
from mixrec.config import FusionConfig, ModelConfig


@dataclass
class ModelState:
    model_cfg: ModelConfig
    fusion_cfg: FusionConfig
    space: SharedSpace
    codebook: Codebook
    weights: FeatureWeights
    blend_weights: QueryBlend
    items: object  # fusion.item_catalog.ItemCatalog (loaded) or CatalogView (exported: the rows of then)
    item_has_identity: np.ndarray  # (N,) bool
    per_modality: dict[str, np.ndarray]  # modality -> (N, D) projections
    masks: dict[str, np.ndarray]  # modality -> (N,) bool
    fused: np.ndarray  # (N, D)
    constant_groups: set[str]
    item_fidx: FeatureIndex
    user_fidx: FeatureIndex
    user_ids: list[str]
    positives: dict[str, dict[str, float]]  # user -> item -> summed weight (> 0 only)
    pair_time: dict[str, dict[str, float]]  # user -> item -> newest event timestamp
    trained_users: set[str]
    lfm: LightFM
    fit_seconds: float
    cold_map: ContentToCollab | None
    cold_map_weight: float
    # The writer's per-item cache (assignments, tokens, LightFM feature rows), when it covers every item:
    # saved so a load does not rebuild a million feature rows in Python.
    item_rows: ItemRows | None = None
    # LightFM representations / biases of those rows, when current (with them a load computes none).
    item_reprs: tuple[np.ndarray, np.ndarray] | None = None


CACHE_FIELDS = ("item_rows", "item_reprs")  # the writer's caches, not attributes of the model
