"""Item embeddings for an evaluation dataset, computed with the configured encoders.

Text only by default (the offline text encoder is the real pretrained MiniLM);
``images=True`` also runs the configured image encoder over ``Item.image`` paths
(offline that encoder is untrained: it exercises the code path, not quality).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mixrec.config import MixrecConfig
from mixrec.embeddings import ItemEmbeddings
from tools.evaluation.protocol import EvalData

if TYPE_CHECKING:
    from encoders.base import Encoder


def build_text_encoder(cfg: MixrecConfig) -> "Encoder":
    from encoders.registry import build_encoder

    return build_encoder(cfg.encoders.text, cfg.limits)


def encode_text(data: EvalData, cfg: MixrecConfig, progress: bool = True,
                encoder: "Encoder | None" = None) -> ItemEmbeddings:
    """``Item.text()`` of every item through the configured (or the given) text encoder."""
    encoder = encoder or build_text_encoder(cfg)
    texts = [it.text() for it in data.items]
    batch = cfg.encoders.text.batch_size
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    bar = (Progress(TextColumn("[bold]encode text"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
           if progress else nullcontext())
    with bar:
        task = bar.add_task("text", total=len(texts)) if progress else None
        for start in range(0, len(texts), batch):
            out[start:start + batch] = encoder.encode(texts[start:start + batch])
            if progress:
                bar.advance(task, min(batch, len(texts) - start))
    return ItemEmbeddings(list(data.item_ids), {"text": out}, {"text": np.ones(len(texts), dtype=bool)},
                          {"text": encoder.describe()})


def encode_items(data: EvalData, cfg: MixrecConfig, images: bool = False, progress: bool = True,
                 text_encoder: "Encoder | None" = None) -> ItemEmbeddings:
    """Text embeddings, plus image embeddings of items whose ``Item.image`` is an absolute path when ``images``."""
    if not images:
        return encode_text(data, cfg, progress, text_encoder)
    from encoders.encode_catalog import encode_catalog

    # Item.image paths are absolute here, so the catalog directory only anchors relative ones.
    # encode_catalog builds its own encoders (text included) from cfg.
    emb, _ = encode_catalog(cfg, Path("/"), items=data.items, progress=progress)
    return emb
