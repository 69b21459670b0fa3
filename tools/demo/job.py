"""The main job's steps: demo catalog -> embeddings -> trained model -> model store -> Bento.

Each step is a function so the CLI (``mixrec demo``) and the tests run the same code.
Steps whose inputs have not changed are skipped: the catalog when the same seed and
sizes produced it, the embeddings when the catalog and encoder settings are the same.

Layout of ``data_dir``::

    items.jsonl, interactions.csv, users.jsonl, media/   the catalog (tools.demo.catalog)
    demo.json                                            what generated it (seed, sizes)
    embeddings.npz + embeddings.json                     native-space vectors + their cache key
    artifacts/                                           the trained HybridModel (meta.json, arrays/*.npy)
    state/<model version>/                               the served Bento's database, media, checkpoints
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixrec.config import MixrecConfig

DEMO_MARKER = "demo.json"
EMBEDDINGS_FILE = "embeddings.npz"
EMBEDDINGS_KEY_FILE = "embeddings.json"
ARTIFACTS_DIR = "artifacts"
STATE_DIR = "state"


class DemoDataError(RuntimeError):
    """``data_dir`` holds something the demo must not overwrite."""


@dataclass
class DemoSizes:
    seed: int = 0
    n_items: int = 300
    n_users: int = 400

    def as_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "n_items": self.n_items, "n_users": self.n_users}


def ensure_catalog(data_dir: Path, sizes: DemoSizes, progress: bool = True) -> tuple[bool, dict[str, Any]]:
    """Generate the demo catalog unless ``data_dir`` already holds the one these sizes make.

    Returns (generated, summary). A catalog without our marker is someone's own data: refused.
    """
    from tools.demo.catalog import generate_demo_catalog

    marker = data_dir / DEMO_MARKER
    if (data_dir / "items.jsonl").exists():
        if not marker.exists():
            raise DemoDataError(f"{data_dir} holds a catalog that `mixrec demo` did not generate; "
                                "pick another --data-dir")
        saved = json.loads(marker.read_text())
        if {k: saved.get(k) for k in sizes.as_dict()} == sizes.as_dict():
            return False, saved
    summary = generate_demo_catalog(data_dir, seed=sizes.seed, n_items=sizes.n_items, n_users=sizes.n_users,
                                    progress=progress, overwrite=True)
    record = {**sizes.as_dict(), "n_interactions": summary.n_interactions,
              "items_per_type": summary.items_per_type, "seconds": round(summary.seconds, 2)}
    marker.write_text(json.dumps(record, indent=2))
    return True, record


def _embeddings_key(data_dir: Path, cfg: MixrecConfig) -> dict[str, Any]:
    catalog = json.loads((data_dir / DEMO_MARKER).read_text()) if (data_dir / DEMO_MARKER).exists() else {}
    return {"catalog": {k: catalog.get(k) for k in ("seed", "n_items", "n_users")},
            "encoders": cfg.encoders.model_dump(mode="json"), "video": cfg.video.model_dump(mode="json"),
            "limits": cfg.limits.model_dump(mode="json")}


def ensure_embeddings(data_dir: Path, cfg: MixrecConfig, progress: bool = True):
    """Encode the catalog (text, image, audio, video) unless cached for the same catalog and encoders.

    Returns (embeddings, stats or None when cached).
    """
    from mixrec.embeddings import ItemEmbeddings
    from encoders.encode_catalog import encode_catalog

    path, key_path = data_dir / EMBEDDINGS_FILE, data_dir / EMBEDDINGS_KEY_FILE
    key = _embeddings_key(data_dir, cfg)
    if path.exists() and key_path.exists() and json.loads(key_path.read_text()) == key:
        return ItemEmbeddings.load(path), None
    emb, stats = encode_catalog(cfg, data_dir, progress=progress)
    emb.save(path)
    key_path.write_text(json.dumps(key, indent=2))
    return emb, stats


def train_model(data_dir: Path, cfg: MixrecConfig, emb, progress: bool = True):
    """Train the hybrid model on the catalog's items and interactions and save it to ``artifacts/``."""
    from fusion.hybrid import HybridModel
    from mixrec.catalog import read_interactions, read_items

    items = read_items(data_dir)
    interactions = read_interactions(data_dir)
    model = HybridModel.train(items, emb, interactions, cfg, progress=progress)
    model.save(data_dir / ARTIFACTS_DIR)
    return model


def store_model(model, sizes: DemoSizes) -> str:
    """Put the trained model into the BentoML model store (the Bento packages it from there)."""
    from tools.packaging import HYBRID_MODEL_NAME

    labels = {"source": "mixrec-demo", **{k: str(v) for k, v in sizes.as_dict().items()}}
    return model.save_to_model_store(HYBRID_MODEL_NAME, labels=labels)


@dataclass
class DemoExamples:
    """Real ids from the demo catalog, for the printed curl / Python examples."""

    user_id: str
    item_id: str
    item_title: str
    query_text: str


def pick_examples(data_dir: Path) -> DemoExamples:
    from collections import Counter

    from mixrec.catalog import read_interactions, read_items

    items = read_items(data_dir)
    inter = read_interactions(data_dir)
    counts = Counter(r.user_id for r in inter)
    user_id = best_example_user(items, inter) or (counts.most_common(1)[0][0] if counts else "u0")
    video = next((it for it in items if it.type == "video"), items[0])
    query = " ".join((items[0].tags or [items[0].title])[:3])
    return DemoExamples(user_id=user_id, item_id=video.item_id, item_title=video.title, query_text=query)


def best_example_user(items, interactions, min_events: int = 15) -> str | None:
    """The user who shows the product at its best: a clear main interest (the category most of their
    events are in) with items of every type still unseen there, and enough history. The most active
    user has often seen all of their main interest, and then gets items from outside it (issue 16:
    the README's user-0023 got "Stainless steel spice rack" explained by a 1% interest).
    Users with fewer than ``min_events`` count only when nobody has that many (tiny catalogues)."""
    from collections import Counter, defaultdict

    category = {it.item_id: it.category for it in items}
    seen: dict[str, set[str]] = defaultdict(set)
    for r in interactions:
        seen[r.user_id].add(r.item_id)
    best, best_key = None, None
    for user, ids in sorted(seen.items()):
        counts = Counter(category.get(i) for i in ids)
        main, n_main = counts.most_common(1)[0]
        unseen = [it for it in items if it.category == main and it.item_id not in ids]
        key = (len(ids) >= min_events, len({it.type for it in unseen}), min(len(unseen), 10), n_main / len(ids),
               len(ids))
        if best_key is None or key > best_key:
            best, best_key = user, key
    return best


RESULT_FILE = "bento.json"


def write_result(data_dir: Path, *, bento_tag: str, model_tag: str, serve_env: dict[str, str]) -> Path:
    """Record what the run built, for scripts and tests: ``<data_dir>/bento.json``."""
    path = data_dir / RESULT_FILE
    path.write_text(json.dumps({"bento": bento_tag, "model": model_tag, "serve_env": serve_env}, indent=2))
    return path
