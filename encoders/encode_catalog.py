"""Encode a catalog directory into ``ItemEmbeddings`` (native spaces, with masks).

The recipe is encoders/item_recipe.py's (the service's too):
text  <- every item's ``Item.text()``
image <- items with ``image``; else a video's keyframe vector
audio <- items with ``audio``; else a video's audio-track vector
Media that fails to decode is skipped (masked) and listed in ``stats["skipped"]``
rather than aborting a whole catalog run.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from encoders.base import Encoder
from encoders.errors import InvalidMediaError
from encoders.fingerprint import describe_with_fingerprint
from encoders.item_recipe import video_fills
from encoders.registry import build_encoder, check_config
from encoders.video import VideoEncoder
from mixrec.catalog import Item, media_path, read_items
from mixrec.config import MixrecConfig
from mixrec.embeddings import ItemEmbeddings


TEXT_BLOCK = 64  # text batches per encode call (the progress bar advances per block)


@dataclass
class CatalogEncoders:
    text: Encoder
    image: Encoder
    audio: Encoder
    video: VideoEncoder

    @classmethod
    def from_config(cls, cfg: MixrecConfig) -> "CatalogEncoders":
        check_config(cfg)
        text = build_encoder(cfg.encoders.text, cfg.limits)
        image = build_encoder(cfg.encoders.image, cfg.limits)
        audio = build_encoder(cfg.encoders.audio, cfg.limits)
        return cls(text, image, audio, VideoEncoder.from_config(cfg, image, audio))


def _encode_robust(encode: Callable[[list], Any], sources: list, batch_size: int,
                   on_bad: Callable[[int, str], None], advance: Callable[[int], None]) -> list[tuple[int, Any]]:
    """Encode in chunks; a bad item (named by the error's index) is reported and dropped."""
    results: list[tuple[int, Any]] = []
    for start in range(0, len(sources), batch_size):
        idx = list(range(start, min(start + batch_size, len(sources))))
        while idx:
            try:
                out = encode([sources[i] for i in idx])
            except InvalidMediaError as e:
                if e.index is None:
                    raise
                on_bad(idx[e.index], e.reason)
                idx.pop(e.index)
                continue
            results.append((idx, out))
            break
        advance(min(batch_size, len(sources) - start))
    return results


def encode_catalog(cfg: MixrecConfig, catalog_dir: str | Path, items: Sequence[Item] | None = None,
                   progress: bool = True, encoders: CatalogEncoders | None = None
                   ) -> tuple[ItemEmbeddings, dict[str, Any]]:
    catalog_dir = Path(catalog_dir)
    items = list(read_items(catalog_dir) if items is None else items)
    enc = encoders or CatalogEncoders.from_config(cfg)
    n = len(items)
    vectors = {m: np.zeros((n, getattr(enc, m).dim), np.float32) for m in ("text", "image", "audio")}
    masks = {m: np.zeros(n, bool) for m in vectors}
    skipped: list[dict[str, str]] = []
    stats: dict[str, Any] = {}

    fills = [video_fills(bool(it.image), bool(it.audio), bool(it.video)) for it in items]
    jobs = {
        "text": [(i, it.text()) for i, it in enumerate(items)],
        "image": [(i, media_path(catalog_dir, it.image)) for i, it in enumerate(items) if it.image],
        "audio": [(i, media_path(catalog_dir, it.audio)) for i, it in enumerate(items) if it.audio],
        "video": [(i, media_path(catalog_dir, it.video)) for i, it in enumerate(items) if fills[i] is not None],
    }
    # Text goes to the encoder in blocks of TEXT_BLOCK batches: it sorts a block by length before cutting it into
    # its own batches (encoders/text.py), so the block, not one batch, is what padding is saved over.
    batch_sizes = {"text": cfg.encoders.text.batch_size * TEXT_BLOCK, "image": cfg.encoders.image.batch_size,
                   "audio": cfg.encoders.audio.batch_size, "video": max(1, cfg.encoders.image.batch_size // 4)}
    encode_fns = {"text": enc.text.encode, "image": enc.image.encode, "audio": enc.audio.encode,
                  "video": enc.video.encode}

    bar = (Progress(TextColumn("[bold]{task.description:<6}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), transient=False) if progress else nullcontext())
    with bar:
        for modality, job in jobs.items():
            rows = [r for r, _ in job]
            task = bar.add_task(modality, total=len(job)) if progress else None

            def advance(k: int, task=task) -> None:
                if progress:
                    bar.advance(task, k)

            def on_bad(j: int, reason: str, modality=modality, rows=rows) -> None:
                skipped.append({"item_id": items[rows[j]].item_id, "modality": modality, "reason": reason})

            t0 = time.perf_counter()
            results = _encode_robust(encode_fns[modality], [s for _, s in job], batch_sizes[modality],
                                     on_bad, advance)
            seconds = time.perf_counter() - t0
            done = 0
            for idx, out in results:
                target = [rows[j] for j in idx]
                done += len(target)
                if modality == "video":  # only what the item's own media leave missing
                    for j, t in enumerate(target):
                        if fills[t].image:
                            vectors["image"][t], masks["image"][t] = out.image[j], True
                        if fills[t].audio and out.audio_mask[j]:
                            vectors["audio"][t], masks["audio"][t] = out.audio[j], True
                else:
                    vectors[modality][target], masks[modality][target] = out, True
            dim = {"video": enc.image.dim}.get(modality) or getattr(enc, modality).dim
            stats[modality] = {"count": done, "dim": int(dim), "seconds": round(seconds, 4),
                               "items_per_s": round(done / seconds, 2) if seconds > 0 and done else 0.0}
    stats["items"] = n
    stats["skipped"] = skipped
    # describe() + the content fingerprint (encoders/fingerprint.py): what later checks compare against
    described = {m: describe_with_fingerprint(getattr(enc, m)) for m in ("text", "image", "audio")}
    described["video"] = {"keyframes": enc.video.keyframes}
    return ItemEmbeddings([it.item_id for it in items], vectors, masks, described), stats
