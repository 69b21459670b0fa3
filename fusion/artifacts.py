"""Save / load a HybridModel's ``ModelState`` (fusion/model_state.py): .npy arrays (memory-mapped) + a small json, model store.

Directory layout (FORMAT_VERSION 2):
  meta.json         format version, config, encoders, shared-space meta, codebook labels, feature
                    weights, blend weights, tag / category vocabularies: nothing that grows per item
  arrays/<name>.npy every array, one file each, loaded with ``mmap_mode="r"`` so workers and
                    replicas on one host share their pages: projections, codebook centroids, the
                    item columns (fusion/item_catalog.py: type / category / tag codes, ids, titles,
                    descriptions and media paths as UTF-8 string tables), per-item projections and
                    masks, LightFM state, the cold-item content map, positives, user ids and
                    feature names (string tables), the items' cluster assignments and LightFM
                    feature rows (CSR) and LightFM representations, so a load rebuilds no
                    per-item state

``.npy`` rather than Arrow: numpy already is the model's array type and loads ``.npy`` memory-mapped
with no copy and no new dependency; the string tables are two arrays each (bytes + end offsets).
Format 1 (meta.json holding every item + arrays.npz) is refused with a "retrain" error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mixrec.config import HYBRID_MODEL_NAME, FusionConfig, ModelConfig
from fusion import lightfm_state
from fusion.codebook import Codebook, SoftAssignment
from fusion.cold_items import ContentToCollab
from fusion.features import FeatureIndex, FeatureWeights
from fusion.item_catalog import ItemCatalog, StringColumn
from fusion.item_state import ItemRows
from fusion.model_state import ModelState
from fusion.query import QueryBlend
from encoders.fingerprint import check_same
from fusion.shared_space import IncompatibleEmbeddingsError, SharedSpace

FORMAT_VERSION = 2
META_FILE = "meta.json"
ARRAYS_DIR = "arrays"


class ArtifactError(ValueError):
    """An artifact directory is missing, of another format version, or made with other encoders."""


def save_state(st: ModelState, directory) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    users, items_pos, weights, times = [], [], [], []
    index = st.items.index
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
    if st.item_rows is not None:
        r = st.item_rows
        arrays.update({"item_assign_clusters": r.assign.clusters, "item_assign_weights": r.assign.weights,
                       "item_token_clusters": r.tokens.clusters, "item_token_weights": r.tokens.weights,
                       "item_x_data": r.features.data, "item_x_indices": r.features.indices,
                       "item_x_indptr": r.features.indptr})
    if st.item_reprs is not None:
        arrays["item_repr"], arrays["item_bias"] = st.item_reprs
    catalog = st.items.catalog if hasattr(st.items, "catalog") else st.items
    if getattr(st.items, "n_dead", 0):  # the exported rows' own mask, not the catalogue's of now
        raise ValueError("save_state: the state holds tombstoned rows (export_state compacts them)")
    n = len(st.items)
    arrays.update({k: v for k, v in catalog.arrays(n).items()})
    for name, values in (("user_ids", st.user_ids), ("item_feature_names", st.item_fidx.names),
                         ("user_feature_names", st.user_fidx.names)):
        arrays.update(StringColumn.of(values).arrays(name))
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
        "item_vocabularies": catalog.vocabularies(),
        "n_items": n,
        "item_x_width": None if st.item_rows is None else int(st.item_rows.features.shape[1]),
        "fit_seconds": st.fit_seconds,
        "cold_map_weight": st.cold_map_weight,
    }
    (d / ARRAYS_DIR).mkdir(exist_ok=True)
    # Each file is written beside its target and renamed over it: a process (or this one) may have the
    # old file memory-mapped, and truncating a mapped file in place kills that reader with SIGBUS.
    for name, arr in arrays.items():
        _replace_file(d / ARRAYS_DIR / f"{name}.npy",
                      lambda f, arr=arr: np.save(f, np.asarray(arr), allow_pickle=False))
    for stale in (d / ARRAYS_DIR).glob("*.npy"):
        if stale.stem not in arrays:
            stale.unlink()  # an earlier save's array this state no longer has
    # last: its presence marks a complete directory
    _replace_file(d / META_FILE, lambda f: f.write(json.dumps(meta).encode()))
    return d


def _replace_file(target: Path, write) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


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
    arrays = load_arrays(d)
    space = SharedSpace.from_parts(meta["shared_space"], arrays)
    cb = meta["codebook"]
    codebook = Codebook(arrays["codebook_centroids"], list(cb["labels"]), [list(t) for t in cb["top_items"]],
                        float(cb["temperature"]), int(cb["top"]))
    items = ItemCatalog.from_arrays(arrays, meta["item_vocabularies"])
    if len(items) != meta["n_items"]:
        raise ArtifactError(f"{directory}: {len(items)} item rows, meta.json says {meta['n_items']}; retrain")
    user_ids = StringColumn.from_arrays(arrays, "user_ids").all()
    positives = {uid: {} for uid in user_ids}
    pair_time = {uid: {} for uid in user_ids}
    ids = items.ids
    for u, i, w, t in zip(arrays["pos_user"].tolist(), arrays["pos_item"].tolist(), arrays["pos_weight"].tolist(),
                          arrays["pos_time"].tolist()):
        uid, iid = user_ids[u], ids[i]
        positives[uid][iid] = w
        pair_time[uid][iid] = t
    trained = arrays["user_trained"]
    item_rows = None
    if meta.get("item_x_width") is not None:
        x = sp.csr_matrix((arrays["item_x_data"], arrays["item_x_indices"], arrays["item_x_indptr"]),
                          shape=(len(items), meta["item_x_width"]), copy=False)
        item_rows = ItemRows(SoftAssignment(arrays["item_assign_clusters"], arrays["item_assign_weights"]),
                             SoftAssignment(arrays["item_token_clusters"], arrays["item_token_weights"]), x)
    item_reprs = (arrays["item_repr"], arrays["item_bias"]) if item_rows is not None and "item_repr" in arrays else None
    return ModelState(
        model_cfg=model_cfg, fusion_cfg=FusionConfig.model_validate(meta["fusion_config"]), space=space,
        codebook=codebook, weights=FeatureWeights(**meta["feature_weights"]),
        blend_weights=QueryBlend.from_dict(meta["blend_weights"]), items=items,
        item_has_identity=arrays["item_has_identity"],
        per_modality={m: arrays[f"item_{m}_proj"] for m in space.modalities},
        masks={m: arrays[f"item_{m}_mask"] for m in space.modalities}, fused=arrays["fused"],
        constant_groups=set(meta["constant_groups"]),
        item_fidx=FeatureIndex(StringColumn.from_arrays(arrays, "item_feature_names").all()),
        user_fidx=FeatureIndex(StringColumn.from_arrays(arrays, "user_feature_names").all()),
        user_ids=user_ids, positives=positives,
        pair_time=pair_time, trained_users={uid for uid, t in zip(user_ids, trained) if t},
        lfm=lightfm_state.restore(model_cfg, arrays), fit_seconds=float(meta.get("fit_seconds", 0.0)),
        cold_map=ContentToCollab.from_arrays(arrays), cold_map_weight=float(meta["cold_map_weight"]),
        item_rows=item_rows, item_reprs=item_reprs)


def load_arrays(directory) -> dict[str, np.ndarray]:
    """Every ``arrays/<name>.npy``, memory-mapped read-only (pages shared between processes)."""
    out = {}
    for path in sorted((Path(directory) / ARRAYS_DIR).glob("*.npy")):
        try:
            out[path.stem] = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError:  # numpy cannot map an empty array's (zero-length) data
            out[path.stem] = np.load(path, allow_pickle=False)
    return out


def save_state_to_model_store(st: ModelState, name: str = HYBRID_MODEL_NAME, labels: dict | None = None) -> str:
    """Save into the BentoML model store (so a Bento can carry it); returns the tag string."""
    import bentoml

    meta_labels = {"format_version": str(FORMAT_VERSION), **(labels or {})}
    with bentoml.models.create(name, labels=meta_labels,
                               metadata={"encoders": json.dumps(st.space.encoders)}) as ref:
        save_state(st, ref.path)
    return str(ref.tag)


def model_store_path(tag: str) -> Path:
    """The directory of model store entry ``tag`` (files saved beside the model travel with it)."""
    import bentoml

    return Path(bentoml.models.get(tag).path)


def load_state_from_model_store(tag: str, expected_encoders: dict[str, dict] | None = None) -> ModelState:
    return load_state(model_store_path(tag), expected_encoders)
