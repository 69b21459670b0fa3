"""A small synthetic catalogue with known structure, for fusion tests and quick benchmarks.

Items belong to categories; each category is a point in a latent space and
each modality sees the item's latent point through its own random linear map
(different native dims), plus noise — so the modalities of one item agree only
after alignment. Users like one or two categories and interact mostly there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixrec.catalog import DEMO_ITEM_TYPES, Interaction, Item
from mixrec.embeddings import ItemEmbeddings

CATEGORIES = ("jazz", "rock", "kitchen", "running", "cooking", "travel")
TYPES = DEMO_ITEM_TYPES


@dataclass
class SyntheticCatalog:
    items: list[Item]
    embeddings: ItemEmbeddings
    interactions: list[Interaction]
    user_tastes: dict[str, tuple[str, ...]]
    latent_maps: dict[str, np.ndarray]  # modality -> (latent, dim) map, to encode new items alike
    latent: np.ndarray  # (n_items, latent)
    centroids: np.ndarray  # (n_categories, latent)

    def encode(self, modality: str, latent: np.ndarray, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
        v = latent @ self.latent_maps[modality]
        v += noise * rng.standard_normal(v.shape) * np.linalg.norm(v, axis=-1, keepdims=True) / np.sqrt(v.shape[-1])
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def make_catalog(n_items: int = 240, n_users: int = 150, dims: dict[str, int] | None = None, latent: int = 12,
                 per_user: int = 15, seed: int = 0, noise: float = 0.3) -> SyntheticCatalog:
    rng = np.random.default_rng(seed)
    dims = dims or {"text": 48, "image": 32, "audio": 24}
    centroids = rng.standard_normal((len(CATEGORIES), latent)) * 1.5
    cat = rng.integers(0, len(CATEGORIES), n_items)
    z = centroids[cat] + 0.6 * rng.standard_normal((n_items, latent))
    maps = {m: rng.standard_normal((latent, d)) for m, d in dims.items()}
    items, vecs, masks = [], {m: np.zeros((n_items, d), np.float32) for m, d in dims.items()}, {}
    types = rng.choice(TYPES, n_items)
    for m in dims:
        masks[m] = np.ones(n_items, bool)
    masks["image"] = types != "audio"  # audio tracks have no picture
    masks["audio"] = types != "product"  # products make no sound
    cat_items = SyntheticCatalog([], None, [], {}, maps, z, centroids)  # encoder helper only
    for m in dims:
        vecs[m] = cat_items.encode(m, z, rng, noise) * masks[m][:, None]
    for i in range(n_items):
        c = CATEGORIES[cat[i]]
        items.append(Item(item_id=f"it{i:04d}", type=str(types[i]), title=f"{c} item {i}",
                          tags=[c, f"{c}-{i % 3}"], category=c))
    emb = ItemEmbeddings([it.item_id for it in items], vecs, masks,
                         {m: {"kind": f"synthetic-{m}", "model": "synthetic", "dim": d} for m, d in dims.items()})
    popularity = rng.pareto(1.5, n_items) + 1.0
    interactions, tastes = [], {}
    for u in range(n_users):
        fav = rng.choice(len(CATEGORIES), size=rng.integers(1, 3), replace=False)
        tastes[f"u{u:04d}"] = tuple(CATEGORIES[f] for f in fav)
        p = popularity * np.where(np.isin(cat, fav), 1.0, 0.03)
        chosen = rng.choice(n_items, size=per_user, replace=False, p=p / p.sum())
        interactions += [Interaction(f"u{u:04d}", items[j].item_id, "like", 1.0, float(t))
                         for t, j in enumerate(chosen)]
    return SyntheticCatalog(items, emb, interactions, tastes, maps, z, centroids)
