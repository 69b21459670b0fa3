"""``encode_items``: a ``Catalog``'s items -> ``ItemEmbeddings``, through the configured encoders, cached.

The encoding itself is ``encoders.encode_catalog.encode_catalog`` (the one item recipe: text, the
item's own image / audio, a video filling what they leave missing; undecodable media masked and
reported). Around it:

* cached by content (tools/api/embedding_cache.py): an unchanged item costs one file read, and the
  encoders are not even loaded when every item is cached;
* items to encode are sorted by text length, so a batch holds texts of similar length and pads little;
* encoded in chunks, each written to the cache as soon as it is done (an interrupted run keeps them);
* a rich progress bar over the items (cached ones counted at once).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mixrec.catalog import Item
from mixrec.config import MODALITIES, MixrecConfig
from mixrec.embeddings import ItemEmbeddings
from tools.api.data import MEDIA_FIELDS, Catalog, items as validate_items
from tools.api.embedding_cache import EmbeddingCache, content_digest, encoder_key, item_key
from tools.api.settings import resolve_config

DEFAULT_CACHE_DIR = Path("~/.cache/mixrec/embeddings")
CHUNK_BATCHES = 8  # items per encode_catalog call: this many encoder batches (then a cache write)


@dataclass
class EncodeReport:
    """What ``encode_items`` did: items read from the cache, encoded now, and media it had to skip."""

    cached: int = 0
    encoded: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def encode_items(catalog: Catalog | Any, config: MixrecConfig | str | os.PathLike | None = None, *,
                 cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, progress: bool = True,
                 encoders=None, report: EncodeReport | None = None, **overrides: Any) -> ItemEmbeddings:
    """Native-space vectors (text, image, audio) of every item, row-aligned with ``catalog.items``.

    Args:
        catalog: a ``Catalog`` (``tools.api.items(...)``), or rows that ``items`` accepts.
        config: the config whose ``encoders`` encode (default configs/offline.yaml; no environment
            variable applies); ``overrides`` as in ``resolve_config`` (``encoders__text__batch_size=64``).
        cache_dir: where vectors are cached by content (None: no cache).
        progress: show a progress bar.
        encoders: an ``encoders.encode_catalog.CatalogEncoders`` already built from the same config.
        report: filled with the counts of cached / encoded items and the skipped media.

    Returns:
        ``ItemEmbeddings`` whose ``encoders`` record the encoders' fingerprints (training keeps them, and
        the Bento refuses encoders that differ)."""
    catalog = catalog if isinstance(catalog, Catalog) else validate_items(catalog)
    cfg = resolve_config(config, **overrides)
    report = report if report is not None else EncodeReport()
    cache = EmbeddingCache(cache_dir, encoder_key(cfg)) if cache_dir is not None else None
    items = list(catalog.items)
    keys = [item_key(it, {m: content_digest(catalog.media(it, m)) for m in MEDIA_FIELDS}) for it in items]
    found = [cache.get(k) if cache else None for k in keys]
    missing = [i for i, hit in enumerate(found) if hit is None]
    described = cache.encoders() if cache else None
    report.cached, report.encoded = len(items) - len(missing), len(missing)
    if missing or described is None:
        done, described = _encode_missing(catalog, cfg, [items[i] for i in missing], encoders, progress,
                                          report, len(items) - len(missing))
        for i, (vec, mask) in zip(missing, done):
            found[i] = (vec, mask)
            if cache:
                cache.put(keys[i], vec, mask)
        if cache:
            cache.put_encoders(described)
    return _assemble(items, found, described)


def _encode_missing(catalog: Catalog, cfg: MixrecConfig, todo: list[Item], encoders, progress: bool,
                    report: EncodeReport, already: int) -> tuple[list[tuple[dict, dict]], dict]:
    """Vectors of ``todo`` (in its order) and the encoders' descriptions."""
    from encoders.encode_catalog import CatalogEncoders, encode_catalog

    enc = encoders or CatalogEncoders.from_config(cfg)
    order = sorted(range(len(todo)), key=lambda i: len(todo[i].text()))  # similar lengths batch together
    chunk = cfg.encoders.text.batch_size * CHUNK_BATCHES
    out: list[tuple[dict, dict] | None] = [None] * len(todo)
    described: dict = {}
    bar = (Progress(TextColumn("[bold]encode items"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
           if progress else nullcontext())
    with bar, tempfile.TemporaryDirectory(prefix="mixrec-encode-") as staging:
        task = bar.add_task("items", total=already + len(todo), completed=already) if progress else None
        for start in range(0, max(len(order), 1), chunk):  # an empty run still describes the encoders
            rows = order[start:start + chunk]
            part = [_with_staged_media(catalog, todo[i], Path(staging)) for i in rows]
            emb, stats = encode_catalog(cfg, Path("/"), items=part, progress=False, encoders=enc)
            described = emb.encoders
            report.skipped += stats["skipped"]
            for m in MODALITIES:
                report.seconds[m] = report.seconds.get(m, 0.0) + stats.get(m, {}).get("seconds", 0.0)
            for j, i in enumerate(rows):
                out[i] = ({m: emb.vectors[m][j] for m in emb.vectors}, {m: bool(emb.masks[m][j]) for m in emb.masks})
            if progress:
                bar.advance(task, len(rows))
    return out, described


def _with_staged_media(catalog: Catalog, item: Item, staging: Path) -> Item:
    """``item`` with its byte media written under ``staging`` (encode_catalog reads paths)."""
    update = {}
    for m in MEDIA_FIELDS:
        blob = catalog.blobs.get((item.item_id, m))
        if blob is not None:
            path = staging / f"{content_digest(blob)}"
            path.write_bytes(blob)
            update[m] = str(path)
    return item.model_copy(update=update) if update else item


def _assemble(items: list[Item], found: list, described: dict) -> ItemEmbeddings:
    n = len(items)
    dims = {}
    for vec, _ in found:
        for m, v in vec.items():
            dims.setdefault(m, v.shape[-1])
    vectors = {m: np.zeros((n, d), np.float32) for m, d in dims.items()}
    masks = {m: np.zeros(n, bool) for m in dims}
    for r, (vec, mask) in enumerate(found):
        for m, v in vec.items():
            vectors[m][r], masks[m][r] = v, mask[m]
    return ItemEmbeddings([it.item_id for it in items], vectors, masks, described)
