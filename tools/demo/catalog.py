"""Deterministic demo catalog: mixed products, videos and audio tracks plus synthetic users.

Nothing is downloaded and no binary is committed: every title, picture, sound
and video is generated from a seed. Items belong to latent interest
categories (``CATEGORIES``) that drive their words, pictures and sounds, and
users' hidden tastes over the same categories drive their feedback, so item
content genuinely predicts who likes an item.

Same seed -> byte-identical ``items.jsonl``, ``interactions.csv``,
``users.jsonl`` and media files (all randomness flows from numpy generators
seeded by (seed, purpose, item index); encoders run single-threaded and
containers are muxed bit-exact, without timestamps).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mixrec.catalog import Item, write_interactions, write_items, write_users
from tools.demo.categories import CATEGORIES, CATEGORY_NAMES, Category
from tools.demo.images import Scene, save_image
from tools.demo.sound import synthesize, write_audio
from tools.demo.text import write_text
from tools.demo.users import (ITEM_TYPES, MIN_INTERACTIONS, item_affinity, sample_interactions, sample_users,
                               to_user_record)
from tools.demo.video import write_video

__all__ = ["CATEGORIES", "CATEGORY_NAMES", "DemoSummary", "generate_demo_catalog"]

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)

SECONDARY_SHARE = 0.25  # items that also carry a second interest
COVER_SHARE = 0.5  # audio items that come with cover art
# Audio formats with the sample rates they are written at (Ogg Opus always decodes at 48 kHz).
AUDIO_FORMATS = (("wav", (16_000, 22_050)), ("flac", (22_050, 32_000, 44_100)), ("ogg", (22_050, 44_100)))
GENERATED = ("items.jsonl", "interactions.csv", "users.jsonl", "media")
_STREAM_TEXT, _STREAM_MEDIA, _STREAM_USERS, _STREAM_PLAN = range(4)


@dataclass
class DemoSummary:
    out_dir: str
    seed: int
    n_items: int
    n_users: int
    n_interactions: int
    density: float  # n_interactions / (n_users * n_items)
    items_per_type: dict[str, int]
    items_per_category: dict[str, int]
    items_with_modality: dict[str, int]  # text / image / audio / video (a video's soundtrack counts as audio)
    media_files: int
    media_bytes: int
    seconds: float
    interactions_per_event: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Slot:
    index: int
    item_id: str
    type: str
    category: Category
    secondary: Category | None


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _plan(n_items: int, seed: int) -> list[_Slot]:
    """Which category and type each item gets: categories balanced, types by category."""
    rng = _rng(seed, _STREAM_PLAN)
    k = len(CATEGORIES)
    per_category = np.full(k, n_items // k)
    per_category[rng.choice(k, size=n_items % k, replace=False)] += 1
    pairs: list[tuple[Category, str]] = []
    for cat, count in zip(CATEGORIES, per_category):
        base = np.ones(3, int) if count >= 3 else np.zeros(3, int)  # every type where room allows
        share = np.array(cat.type_weights) * (count - base.sum())
        extra = np.floor(share).astype(int)
        extra[np.argsort(extra - share)[: count - base.sum() - extra.sum()]] += 1  # largest remainders
        for t, c in zip(ITEM_TYPES, base + extra):
            pairs += [(cat, t)] * int(c)
    order = rng.permutation(len(pairs))  # ids must not reveal the category
    counters = dict.fromkeys(ITEM_TYPES, 0)
    slots = []
    for index, j in enumerate(order):
        cat, item_type = pairs[j]
        secondary = None
        if rng.random() < SECONDARY_SHARE:
            others = [c for c in CATEGORIES if c is not cat]
            secondary = others[int(rng.integers(len(others)))]
        slots.append(_Slot(index, f"{item_type}-{counters[item_type]:04d}", item_type, cat, secondary))
        counters[item_type] += 1
    return slots


def _write_media(slot: _Slot, out_dir: Path, seed: int) -> dict[str, str]:
    """Render and save an item's media; returns the Item fields holding relative paths."""
    rng = _rng(seed, _STREAM_MEDIA, slot.index)
    style, accent = slot.category, slot.secondary
    fields: dict[str, str] = {}

    def target(kind: str, suffix: str) -> tuple[Path, str]:
        rel = f"media/{kind}/{slot.item_id}.{suffix}"
        return out_dir / rel, rel

    if slot.type == "product":
        size = int(rng.choice([128, 160, 192, 224]))
        path, fields["image"] = target("images", "jpg" if rng.random() < 0.7 else "png")
        save_image(Scene(style.visual, rng, size, accent and accent.visual).render(), path)
    elif slot.type == "audio":
        fmt, rates = AUDIO_FORMATS[int(rng.integers(len(AUDIO_FORMATS)))]
        sr = int(rng.choice(rates))
        wave = synthesize(style.sound, rng, float(rng.uniform(3.0, 8.0)), sr, accent and accent.sound)
        path, fields["audio"] = target("audio", fmt)
        write_audio(path, wave, sr)
        if rng.random() < COVER_SHARE:
            path, fields["image"] = target("covers", "png")
            save_image(Scene(style.visual, rng, 128, accent and accent.visual).render(), path)
    else:
        size, fps = int(rng.choice([96, 128])), int(rng.choice([8, 10, 12]))
        seconds = float(rng.uniform(1.0, 3.0))
        sr = int(rng.choice([22_050, 44_100]))
        scene = Scene(style.visual, rng, size, accent and accent.visual)
        wave = synthesize(style.sound, rng, seconds, sr, accent and accent.sound)
        path, fields["video"] = target("videos", "mp4")
        write_video(path, scene, fps, max(2, round(seconds * fps)), wave, sr)
    return fields


def _prepare(out_dir: Path, overwrite: bool) -> None:
    existing = [name for name in GENERATED if (out_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a catalog ({', '.join(existing)}); "
                              "pass overwrite=True to replace it")
    for name in existing:  # only what this generator writes; anything else is left alone
        target = out_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    for kind in ("images", "covers", "audio", "videos"):
        (out_dir / "media" / kind).mkdir(parents=True, exist_ok=True)


def generate_demo_catalog(out_dir: str | Path, *, seed: int = 0, n_items: int = 300, n_users: int = 400,
                          progress: bool | ProgressCallback = False, overwrite: bool = False) -> DemoSummary:
    """Write a demo catalog into ``out_dir`` (created if needed) and summarise it.

    ``progress``: True shows a rich progress bar; a callable receives (stage, done, total).
    ``overwrite``: replace a catalog already there (only the files this function writes).
    """
    min_items = 3 * len(CATEGORIES)
    if n_items < min_items:
        raise ValueError(f"n_items must be at least {min_items} (every category with every type)")
    if n_users < 1:
        raise ValueError("n_users must be at least 1")
    if progress is True:
        with _RichProgress() as bar:
            return generate_demo_catalog(out_dir, seed=seed, n_items=n_items, n_users=n_users,
                                         progress=bar.update, overwrite=overwrite)
    report: ProgressCallback = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    out = Path(out_dir)
    _prepare(out, overwrite)

    slots = _plan(n_items, seed)
    titles: set[str] = set()
    items: list[Item] = []
    for done, slot in enumerate(slots, start=1):
        text = write_text(slot.type, slot.category, slot.secondary, _rng(seed, _STREAM_TEXT, slot.index), titles)
        items.append(Item(item_id=slot.item_id, type=slot.type, title=text.title, description=text.description,
                          tags=text.tags, category=slot.category.name, **_write_media(slot, out, seed)))
        report("media", done, n_items)
    write_items(out, items)

    report("interactions", 0, 1)
    rng = _rng(seed, _STREAM_USERS)
    users = sample_users(n_users, CATEGORY_NAMES, n_items, rng,
                         mean_interactions=max(MIN_INTERACTIONS + 3.0, 0.05 * n_items))
    affinity = item_affinity(items, [s.secondary and s.secondary.name for s in slots], CATEGORY_NAMES)
    interactions = sample_interactions(users, items, affinity, rng)
    write_interactions(out, interactions)
    write_users(out, (to_user_record(u, CATEGORY_NAMES) for u in users))
    report("interactions", 1, 1)

    media = [p for p in (out / "media").rglob("*") if p.is_file()]
    events: dict[str, int] = {}
    for r in interactions:
        events[r.event] = events.get(r.event, 0) + 1
    return DemoSummary(
        out_dir=str(out), seed=seed, n_items=n_items, n_users=n_users, n_interactions=len(interactions),
        density=len(interactions) / (n_items * n_users),
        items_per_type={t: sum(it.type == t for it in items) for t in ITEM_TYPES},
        items_per_category={c: sum(it.category == c for it in items) for c in CATEGORY_NAMES},
        items_with_modality={"text": len(items), "image": sum(it.image is not None for it in items),
                             "audio": sum(it.audio is not None or it.video is not None for it in items),
                             "video": sum(it.video is not None for it in items)},
        media_files=len(media), media_bytes=sum(p.stat().st_size for p in media),
        seconds=time.perf_counter() - started, interactions_per_event=dict(sorted(events.items())),
    )


class _RichProgress:
    """A rich progress bar fed by the (stage, done, total) callback."""

    def __enter__(self) -> "_RichProgress":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn())
        self._progress.__enter__()
        self._tasks: dict[str, int] = {}
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            label = {"media": "items + media", "interactions": "users + interactions"}.get(stage, stage)
            self._tasks[stage] = self._progress.add_task(label, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)
