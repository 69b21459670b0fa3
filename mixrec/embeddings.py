"""Per-item native-space embeddings with masks for missing modalities (npz on disk)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixrec.config import MODALITIES


@dataclass
class ItemEmbeddings:
    """Row i of every array belongs to ``item_ids[i]``.

    ``vectors[m]`` is (N, dim_m) float32; rows where ``masks[m]`` is False are
    zeros that carry no data (the item has no such modality) and must be masked,
    never used as data. ``encoders[m]`` is the encoder's ``describe()`` so that
    vectors from different encoders are never mixed.
    """

    item_ids: list[str]
    vectors: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    encoders: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for m in self.vectors:
            if self.vectors[m].shape[0] != n or self.masks[m].shape != (n,):
                raise ValueError(f"embeddings for {m}: shape {self.vectors[m].shape} / mask "
                                 f"{self.masks[m].shape} do not match {n} items")

    def __len__(self) -> int:
        return len(self.item_ids)

    def dims(self) -> dict[str, int]:
        return {m: int(v.shape[1]) for m, v in self.vectors.items()}

    def index(self) -> dict[str, int]:
        return {iid: i for i, iid in enumerate(self.item_ids)}

    def subset(self, item_ids: list[str]) -> "ItemEmbeddings":
        idx = self.index()
        rows = np.array([idx[i] for i in item_ids], dtype=np.int64)
        return ItemEmbeddings(list(item_ids), {m: v[rows] for m, v in self.vectors.items()},
                              {m: k[rows] for m, k in self.masks.items()}, dict(self.encoders))

    def save(self, path: str | Path) -> None:
        arrays = {"item_ids": np.array(self.item_ids, dtype=str)}
        for m in self.vectors:
            arrays[f"vec_{m}"] = self.vectors[m].astype(np.float32)
            arrays[f"mask_{m}"] = self.masks[m].astype(bool)
        arrays["encoders_json"] = np.array(json.dumps(self.encoders))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ItemEmbeddings":
        with np.load(path, allow_pickle=False) as z:
            ids = [str(s) for s in z["item_ids"]]
            vecs = {m: z[f"vec_{m}"] for m in MODALITIES if f"vec_{m}" in z}
            masks = {m: z[f"mask_{m}"] for m in vecs}
            enc = json.loads(str(z["encoders_json"])) if "encoders_json" in z else {}
        return cls(ids, vecs, masks, enc)
