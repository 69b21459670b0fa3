"""Save / load a HybridModel's ``ModelState`` (fusion/model_state.py): npz without pickle + json, model store.

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
import numpy as np

from mixrec.catalog import Item
from mixrec.config import HYBRID_MODEL_NAME, FusionConfig, ModelConfig
from fusion import lightfm_state
from fusion.codebook import Codebook
from fusion.cold_items import ContentToCollab
from fusion.features import FeatureIndex, FeatureWeights
from fusion.model_state import ModelState
from fusion.query import QueryBlend
from encoders.fingerprint import check_same
from fusion.shared_space import IncompatibleEmbeddingsError, SharedSpace

FORMAT_VERSION = 1
META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"


class ArtifactError(ValueError):
    """An artifact directory is missing, of another format version, or made with other encoders."""


def save_state(st: ModelState, directory) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    users, items_pos, weights, times = [], [], [], []
    index = {it.item_id: i for i, it in enumerate(st.items)}
    for u, uid in enumerate(st.user_ids):
        when = st.pair_time.get(uid, {})
        for iid, w in st.positives[uid].items():
            users.append(u)
            items_pos.append(index[iid])
            weights.append(w)
            times.append(when.get(iid, 0.0))
    arrays = {**st.space.arrays(), **lightfm_state.state_arrays(st.lfm),
              "codebook_centroids": st.codebook.centroids, "fused": st.fused,
              "item_has_identity": np.asarray(st.item_has_identity, bool),
              "pos_user": np.asarray(users, np.int64), "pos_item": np.asarray(items_pos, np.int64),
              "pos_weight": np.asarray(weights, np.float32), "pos_time": np.asarray(times, np.float64),
              "user_trained": np.array([uid in st.trained_users for uid in st.user_ids], bool)}
    if st.cold_map is not None:
        arrays.update(st.cold_map.arrays())
    for m in st.per_modality:
        arrays[f"item_{m}_proj"] = st.per_modality[m]
        arrays[f"item_{m}_mask"] = st.masks[m]
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": HYBRID_MODEL_NAME,
        "model_config": st.model_cfg.model_dump(mode="json"),
        "fusion_config": st.fusion_cfg.model_dump(mode="json"),
        "encoders": st.space.encoders,
        "shared_space": st.space.meta(),
        "codebook": {"labels": st.codebook.labels, "top_items": st.codebook.top_items,
                     "temperature": st.codebook.temperature, "top": st.codebook.top},
        "feature_weights": st.weights.__dict__,
        "blend_weights": st.blend_weights.as_dict(),
        "constant_groups": sorted(st.constant_groups),
        "item_features": st.item_fidx.names,
        "user_features": st.user_fidx.names,
        "user_ids": st.user_ids,
        "items": [it.model_dump(mode="json", exclude_none=True) for it in st.items],
        "fit_seconds": st.fit_seconds,
        "cold_map_weight": st.cold_map_weight,
    }
    np.savez(d / ARRAYS_FILE, **arrays)
    (d / META_FILE).write_text(json.dumps(meta))
    return d


def read_meta(directory) -> dict:
    path = Path(directory) / META_FILE
    if not path.exists():
        raise ArtifactError(f"no mixrec artifacts in {directory} (missing {META_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("kind") != HYBRID_MODEL_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{directory}: artifact format {meta.get('kind')!r} v{meta.get('format_version')} "
                            f"is not supported (this mixrec reads {HYBRID_MODEL_NAME} v{FORMAT_VERSION}); retrain")
    return meta


def check_encoders(saved: dict[str, dict], expected: dict[str, dict]) -> None:
    """Refuse artifacts trained on other encoders: their vector spaces are not interchangeable."""
    check_same(saved, expected, have_name="the artifacts", want_name="the configured encoders",
               fix="retrain with `mixrec train` or configure the encoders the artifacts were built with",
               error=IncompatibleEmbeddingsError)


def load_state(directory, expected_encoders: dict[str, dict] | None = None) -> ModelState:
    d = Path(directory)
    meta = read_meta(d)
    if expected_encoders:
        check_encoders(meta["encoders"], expected_encoders)
    model_cfg = ModelConfig.model_validate(meta["model_config"])
    with np.load(d / ARRAYS_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    space = SharedSpace.from_parts(meta["shared_space"], arrays)
    cb = meta["codebook"]
    codebook = Codebook(arrays["codebook_centroids"], list(cb["labels"]), [list(t) for t in cb["top_items"]],
                        float(cb["temperature"]), int(cb["top"]))
    items = [Item.model_validate(it) for it in meta["items"]]
    user_ids = list(meta["user_ids"])
    positives = {uid: {} for uid in user_ids}
    pair_time = {uid: {} for uid in user_ids}
    # Artifacts saved before recency / fold-in existed carry no times (no decay) and no trained flags
    # (every saved user counts as trained, which is how they were served then).
    times = arrays.get("pos_time", np.zeros(len(arrays["pos_user"])))
    for u, i, w, t in zip(arrays["pos_user"], arrays["pos_item"], arrays["pos_weight"], times):
        uid, iid = user_ids[u], items[i].item_id
        positives[uid][iid] = float(w)
        pair_time[uid][iid] = float(t)
    trained = arrays.get("user_trained", np.ones(len(user_ids), bool))
    return ModelState(
        model_cfg=model_cfg, fusion_cfg=FusionConfig.model_validate(meta["fusion_config"]), space=space,
        codebook=codebook, weights=FeatureWeights(**meta["feature_weights"]),
        blend_weights=QueryBlend.from_dict(meta["blend_weights"]), items=items,
        item_has_identity=[bool(b) for b in arrays["item_has_identity"]],
        per_modality={m: arrays[f"item_{m}_proj"] for m in space.modalities},
        masks={m: arrays[f"item_{m}_mask"] for m in space.modalities}, fused=arrays["fused"],
        constant_groups=set(meta["constant_groups"]), item_fidx=FeatureIndex(meta["item_features"]),
        user_fidx=FeatureIndex(meta["user_features"]), user_ids=user_ids, positives=positives,
        pair_time=pair_time, trained_users={uid for uid, t in zip(user_ids, trained) if t},
        lfm=lightfm_state.restore(model_cfg, arrays), fit_seconds=float(meta.get("fit_seconds", 0.0)),
        cold_map=ContentToCollab.from_arrays(arrays), cold_map_weight=float(meta["cold_map_weight"]))


def save_state_to_model_store(st: ModelState, name: str = HYBRID_MODEL_NAME, labels: dict | None = None) -> str:
    """Save into the BentoML model store (so a Bento can carry it); returns the tag string."""
    import bentoml

    meta_labels = {"format_version": str(FORMAT_VERSION), **(labels or {})}
    with bentoml.models.create(name, labels=meta_labels,
                               metadata={"encoders": json.dumps(st.space.encoders)}) as ref:
        save_state(st, ref.path)
    return str(ref.tag)


def load_state_from_model_store(tag: str, expected_encoders: dict[str, dict] | None = None) -> ModelState:
    import bentoml

    ref = bentoml.models.get(tag)
    return load_state(ref.path, expected_encoders)
