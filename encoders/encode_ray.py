"""``mixrec encode --engine ray``: the catalogue encoded by a Ray Data actor pool, same output as local.

Each actor builds the encoders once (``CatalogEncoders.from_config``) and runs the one batch-encoding
recipe, ``encoders.encode_catalog.encode_catalog``, on each block of items Ray Data hands it; the blocks
come back as columns and are put in catalogue order into the same ``ItemEmbeddings`` the local engine
writes. Pool size, items per call, CPUs and GPU fraction per actor come from ``encode.ray`` in the
config (the GPU fraction applies when the cluster has GPUs). Ray Data draws the progress bars.

Locally ``ray.init()`` starts a runtime on this machine; on a cluster pass its address
(``--ray-address ray://head:10001`` or ``auto`` on a cluster node). Media paths resolve against the
catalogue directory, so on a cluster it must be on storage every node mounts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mixrec.catalog import Item, read_items
from mixrec.config import MODALITIES, MixrecConfig
from mixrec.embeddings import ItemEmbeddings


class _EncodeBlock:
    """One Ray Data actor: the encoders, loaded once, applied to blocks of catalogue rows."""

    def __init__(self, cfg_json: str, catalog_dir: str) -> None:
        from encoders.encode_catalog import CatalogEncoders

        self.cfg = MixrecConfig.model_validate_json(cfg_json)
        self.catalog_dir = catalog_dir
        self.encoders = CatalogEncoders.from_config(self.cfg)

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from encoders.encode_catalog import encode_catalog

        items = [Item.model_validate_json(s) for s in block["item"]]
        emb, stats = encode_catalog(self.cfg, self.catalog_dir, items=items, progress=False, encoders=self.encoders)
        out: dict[str, Any] = {"row": block["row"]}
        for m in MODALITIES:
            out[f"vec_{m}"], out[f"mask_{m}"] = emb.vectors[m], emb.masks[m]
        out["skipped"] = np.array([json.dumps(stats["skipped"])] + [""] * (len(items) - 1))
        out["encoders"] = np.array([json.dumps(emb.encoders)] * len(items))
        return out


def encode_catalog_ray(cfg: MixrecConfig, catalog_dir: str | Path, items: Sequence[Item] | None = None,
                       progress: bool = True, address: str | None = None) -> tuple[ItemEmbeddings, dict[str, Any]]:
    """``encode_catalog`` on a Ray Data actor pool: the same ``(ItemEmbeddings, stats)``."""
    import ray

    catalog_dir = Path(catalog_dir)
    items = list(read_items(catalog_dir) if items is None else items)
    rc = cfg.encode.ray
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        gpus = rc.gpus_per_actor if ray.cluster_resources().get("GPU", 0) > 0 else 0
        t0 = time.perf_counter()
        rows = ray.data.from_items([{"row": i, "item": it.model_dump_json()} for i, it in enumerate(items)])
        encoded = rows.map_batches(
            _EncodeBlock, fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "catalog_dir": str(catalog_dir)},
            batch_size=rc.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=rc.actors),
            num_cpus=rc.cpus_per_actor, num_gpus=gpus)
        emb, skipped = _assemble(items, encoded.iter_batches(batch_size=None, batch_format="numpy"))
        seconds = time.perf_counter() - t0
    finally:
        if started_here:
            ray.shutdown()
    stats = {"items": len(items), "skipped": skipped, "engine": "ray", "actors": rc.actors, "gpus_per_actor": gpus,
             "seconds": round(seconds, 3), "items_per_s": round(len(items) / seconds, 2) if seconds > 0 else 0.0}
    for m in MODALITIES:
        stats[m] = {"count": int(emb.masks[m].sum()), "dim": emb.dims()[m]}
    return emb, stats


def _assemble(items: Sequence[Item], blocks) -> tuple[ItemEmbeddings, list[dict]]:
    """Blocks (in any order) back into catalogue order."""
    n = len(items)
    vectors: dict[str, np.ndarray] = {}
    masks = {m: np.zeros(n, bool) for m in MODALITIES}
    skipped: list[dict] = []
    described: dict = {}
    for block in blocks:
        rows = block["row"].astype(np.int64)
        for m in MODALITIES:
            vec = block[f"vec_{m}"]
            if m not in vectors:
                vectors[m] = np.zeros((n, vec.shape[1]), np.float32)
            vectors[m][rows], masks[m][rows] = vec, block[f"mask_{m}"]
        skipped += [s for text in block["skipped"] if text for s in json.loads(text)]
        described = described or json.loads(block["encoders"][0])
    if n and not vectors:
        raise RuntimeError("Ray returned no encoded blocks")
    return ItemEmbeddings([it.item_id for it in items], vectors, masks, described), skipped
