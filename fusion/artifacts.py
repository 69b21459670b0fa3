"""Save / load a trained HybridModel in safe formats (npz without pickle + json), and the BentoML model store.

Directory layout (FORMAT_VERSION 1):
  meta.json    format version, config, encoders, shared-space meta, codebook labels,
               feature names, id maps, blend weights, items (catalog metadata)
  arrays.npz   projections, codebook centroids, per-item projections/masks,
               LightFM state arrays (embeddings, biases, accumulators), the cold-item
               content map, positives
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mixrec.catalog import Item
from mixrec.config import FusionConfig, ModelConfig
from fusion import lightfm_state
from fusion.codebook import Codebook
from fusion.cold_items import ContentToCollab
from fusion.features import FeatureIndex, FeatureWeights
from fusion.query import QueryBlend
from encoders.fingerprint import check_same
from fusion.shared_space import IncompatibleEmbeddingsError, SharedSpace

if TYPE_CHECKING:
    from fusion.hybrid import HybridModel

FORMAT_VERSION = 1
META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"


class ArtifactError(ValueError):
    """An artifact directory is missing, of another format version, or made with other encoders."""


def save_model(model: "HybridModel", directory) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with model._lock:  # a consistent state: no writer runs while we copy
        users, items_pos, weights, times = [], [], [], []
        index = model._live_item_index()
        for u, uid in enumerate(model.user_ids):
            when = model.pair_time.get(uid, {})
            for iid, w in model.positives[uid].items():
                users.append(u)
                items_pos.append(index[iid])
                weights.append(w)
                times.append(when.get(iid, 0.0))
        arrays = {**model.space.arrays(), **lightfm_state.state_arrays(model.lfm),
                  "codebook_centroids": model.codebook.centroids, "fused": model.fused,
                  "item_has_identity": np.asarray(model.item_has_identity, bool),
                  "pos_user": np.asarray(users, np.int64), "pos_item": np.asarray(items_pos, np.int64),
                  "pos_weight": np.asarray(weights, np.float32), "pos_time": np.asarray(times, np.float64),
                  "user_trained": np.array([uid in model.trained_users for uid in model.user_ids], bool)}
        if model.cold_map is not None:
            arrays.update(model.cold_map.arrays())
        for m in model.per_modality:
            arrays[f"item_{m}_proj"] = model.per_modality[m]
            arrays[f"item_{m}_mask"] = model.masks[m]
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "mixrec-hybrid",
            "model_config": model.model_cfg.model_dump(mode="json"),
            "fusion_config": model.fusion_cfg.model_dump(mode="json"),
            "encoders": model.space.encoders,
            "shared_space": model.space.meta(),
            "codebook": {"labels": model.codebook.labels, "top_items": model.codebook.top_items,
                         "temperature": model.codebook.temperature, "top": model.codebook.top},
            "feature_weights": model.weights.__dict__,
            "blend_weights": model.blend_weights.as_dict(),
            "constant_groups": sorted(model.constant_groups),
            "item_features": model.item_fidx.names,
            "user_features": model.user_fidx.names,
            "user_ids": model.user_ids,
            "items": [it.model_dump(mode="json", exclude_none=True) for it in model.items],
            "fit_seconds": model.fit_seconds,
            "cold_map_weight": model.cold_map_weight,
        }
    np.savez(d / ARRAYS_FILE, **arrays)
    (d / META_FILE).write_text(json.dumps(meta))
    return d


def read_meta(directory) -> dict:
    path = Path(directory) / META_FILE
    if not path.exists():
        raise ArtifactError(f"no mixrec artifacts in {directory} (missing {META_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("kind") != "mixrec-hybrid" or meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{directory}: artifact format {meta.get('kind')!r} v{meta.get('format_version')} "
                            f"is not supported (this mixrec reads mixrec-hybrid v{FORMAT_VERSION}); retrain")
    return meta


def check_encoders(saved: dict[str, dict], expected: dict[str, dict]) -> None:
    """Refuse artifacts trained on other encoders: their vector spaces are not interchangeable."""
    check_same(saved, expected, have_name="the artifacts", want_name="the configured encoders",
               fix="retrain with `mixrec train` or configure the encoders the artifacts were built with",
               error=IncompatibleEmbeddingsError)


def load_model(directory, expected_encoders: dict[str, dict] | None = None) -> "HybridModel":
    from fusion.hybrid import HybridModel

    d = Path(directory)
    meta = read_meta(d)
    if expected_encoders:
        check_encoders(meta["encoders"], expected_encoders)
    model_cfg = ModelConfig.model_validate(meta["model_config"])
    fusion_cfg = FusionConfig.model_validate(meta["fusion_config"])
    with np.load(d / ARRAYS_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    space = SharedSpace.from_parts(meta["shared_space"], arrays)
    cb = meta["codebook"]
    codebook = Codebook(arrays["codebook_centroids"], list(cb["labels"]), [list(t) for t in cb["top_items"]],
                        float(cb["temperature"]), int(cb["top"]))
    model = HybridModel(model_cfg, fusion_cfg, space, codebook, FeatureWeights(**meta["feature_weights"]),
                        QueryBlend.from_dict(meta["blend_weights"]))
    model.items = [Item.model_validate(it) for it in meta["items"]]
    model.item_has_identity = [bool(b) for b in arrays["item_has_identity"]]
    model.per_modality = {m: arrays[f"item_{m}_proj"] for m in space.modalities}
    model.masks = {m: arrays[f"item_{m}_mask"] for m in space.modalities}
    model.fused = arrays["fused"]
    model.constant_groups = set(meta["constant_groups"])
    model.item_fidx = FeatureIndex(meta["item_features"])
    model.user_fidx = FeatureIndex(meta["user_features"])
    model.user_ids = list(meta["user_ids"])
    model.positives = {uid: {} for uid in model.user_ids}
    model.pair_time = {uid: {} for uid in model.user_ids}
    # Artifacts saved before recency / fold-in existed carry no times (no decay) and no trained flags
    # (every saved user counts as trained, which is how they were served then).
    times = arrays.get("pos_time", np.zeros(len(arrays["pos_user"])))
    for u, i, w, t in zip(arrays["pos_user"], arrays["pos_item"], arrays["pos_weight"], times):
        uid, iid = model.user_ids[u], model.items[i].item_id
        model.positives[uid][iid] = float(w)
        model.pair_time[uid][iid] = float(t)
    trained = arrays.get("user_trained", np.ones(len(model.user_ids), bool))
    model.trained_users = {uid for uid, t in zip(model.user_ids, trained) if t}
    model.lfm = lightfm_state.restore(model_cfg, arrays)
    model.fit_seconds = float(meta.get("fit_seconds", 0.0))
    model.cold_map = ContentToCollab.from_arrays(arrays)
    model.cold_map_weight = float(meta["cold_map_weight"])
    model._refresh()
    return model


def save_to_model_store(model: "HybridModel", name: str = "mixrec-hybrid", labels: dict | None = None) -> str:
    """Save into the BentoML model store (so a Bento can carry it); returns the tag string."""
    import bentoml

    meta_labels = {"format_version": str(FORMAT_VERSION), **(labels or {})}
    with bentoml.models.create(name, labels=meta_labels,
                               metadata={"encoders": json.dumps(model.space.encoders)}) as ref:
        save_model(model, ref.path)
    return str(ref.tag)


def load_from_model_store(tag: str, expected_encoders: dict[str, dict] | None = None) -> "HybridModel":
    import bentoml

    ref = bentoml.models.get(tag)
    return load_model(ref.path, expected_encoders)
