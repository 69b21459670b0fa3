"""Synthetic catalogs of any size for serving benchmarks, built through HybridModel.train.

No encoders run: each item gets a generated text vector (a latent category point seen
through a fixed random map, plus noise, unit length), so the model goes through the
same training path as a real catalog (shared space, codebook, LightFM, cold map). Users
like one or two categories. Only the text modality is present, which keeps the
snapshot's per-modality arrays to one (N, shared_dim) block — the memory workaround
for 1M items (see the report in BENCHMARKS.md).

``text_dim=384`` makes the vectors the size of all-MiniLM-L6-v2's, so a served model can
answer real text queries (the text encoder is the real MiniLM; the catalog is not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fusion.hybrid import HybridModel
from mixrec.catalog import Interaction, Item
from mixrec.config import MixrecConfig
from mixrec.embeddings import ItemEmbeddings

TYPES = ("product", "video", "audio")
N_CATEGORIES = 40
N_TAGS = 50
LATENT = 16


@dataclass
class BuiltCatalog:
    model: HybridModel
    items: list[Item]
    users: list[str]
    build_seconds: float


def synthetic_items(n: int, rng: np.random.Generator) -> tuple[list[Item], np.ndarray]:
    """n items (types cycle, two tags each) and their category ids."""
    cat = rng.integers(0, N_CATEGORIES, n)
    tag2 = rng.integers(0, N_TAGS, n)
    items = [Item.model_construct(item_id=f"i{i}", type=TYPES[i % 3], title=f"item {i}", description="",
                                  tags=[f"c{c}", f"t{t}"], category=f"c{c}", image=None, audio=None, video=None)
             for i, (c, t) in enumerate(zip(cat.tolist(), tag2.tolist()))]
    return items, cat


def text_vectors(cat: np.ndarray, dim: int, rng: np.random.Generator, chunk: int = 200_000) -> np.ndarray:
    """Unit (N, dim) float32 vectors clustered by category, generated in chunks to bound peak memory."""
    centroids = rng.standard_normal((N_CATEGORIES, LATENT)).astype(np.float32) * 1.5
    proj = rng.standard_normal((LATENT, dim)).astype(np.float32)
    out = np.empty((len(cat), dim), np.float32)
    for lo in range(0, len(cat), chunk):
        c = cat[lo:lo + chunk]
        z = centroids[c] + 0.6 * rng.standard_normal((len(c), LATENT)).astype(np.float32)
        v = z @ proj
        v += 0.3 * rng.standard_normal(v.shape).astype(np.float32) * np.linalg.norm(v, axis=1, keepdims=True) \
            / np.sqrt(dim)
        out[lo:lo + chunk] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def synthetic_interactions(cat: np.ndarray, n_users: int, per_user: int,
                           rng: np.random.Generator) -> list[Interaction]:
    """Each user likes items of one or two categories (popularity-skewed within them)."""
    by_cat = [np.flatnonzero(cat == c) for c in range(N_CATEGORIES)]
    out = []
    for u in range(n_users):
        favs = rng.choice(N_CATEGORIES, size=int(rng.integers(1, 3)), replace=False)
        pool = np.concatenate([by_cat[f] for f in favs])
        pick = pool[np.minimum((rng.pareto(1.2, per_user) * 50).astype(np.int64), len(pool) - 1)]
        for t, j in enumerate(dict.fromkeys(pick.tolist())):
            out.append(Interaction(f"u{u}", f"i{j}", "like", 1.0, float(t)))
    return out


def bench_config(base: MixrecConfig, shared_dim: int = 32, components: int = 32, epochs: int = 3,
                 codebook: int = 32) -> MixrecConfig:
    """A copy of ``base`` with a small shared space / codebook / LightFM so 1M items fit in memory."""
    data = base.model_dump()
    data["fusion"].update(shared_dim=shared_dim, codebook_size=codebook)
    data["model"].update(no_components=components, epochs=epochs)
    return MixrecConfig.model_validate(data)


def build(n_items: int, cfg: MixrecConfig, text_dim: int = 384, n_users: int = 2000, per_user: int = 20,
          seed: int = 0, encoder: dict | None = None) -> BuiltCatalog:
    """Train a HybridModel over ``n_items`` synthetic items (text modality only)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    items, cat = synthetic_items(n_items, rng)
    vecs = text_vectors(cat, text_dim, rng)
    emb = ItemEmbeddings([it.item_id for it in items], {"text": vecs}, {"text": np.ones(n_items, bool)},
                         {"text": dict(encoder or {"kind": "synthetic-text", "model": "synthetic", "dim": text_dim})})
    inter = synthetic_interactions(cat, n_users, per_user, rng)
    model = HybridModel.train(items, emb, inter, cfg)
    return BuiltCatalog(model, items, [f"u{u}" for u in range(n_users)], time.perf_counter() - t0)
