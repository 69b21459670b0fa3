"""A mixrec catalog directory (``mixrec/catalog.py`` format) as ``EvalData``.

Users are those appearing in ``interactions.csv`` (sorted ids); items keep the
order of ``items.jsonl``. Every interaction with a positive weight is a positive;
interactions naming an unknown item are dropped and counted in ``extra``.
Embeddings come from ``<catalog-dir>/embeddings.npz`` when it exists
(``mixrec encode --out <catalog-dir>/embeddings.npz``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixrec.catalog import read_interactions, read_items
from mixrec.embeddings import ItemEmbeddings
from tools.evaluation.protocol import EvalData
from tools.evaluation.splits import InteractionLog

EMBEDDINGS_FILE = "embeddings.npz"


def load_catalog_dir(catalog_dir: str | Path) -> EvalData:
    root = Path(catalog_dir)
    items = read_items(root)
    item_ids = [it.item_id for it in items]
    item_index = {iid: i for i, iid in enumerate(item_ids)}
    rows = [r for r in read_interactions(root) if r.weight > 0]
    known = [r for r in rows if r.item_id in item_index]
    user_ids = sorted({r.user_id for r in known})
    user_index = {u: i for i, u in enumerate(user_ids)}
    log = InteractionLog(np.array([user_index[r.user_id] for r in known], dtype=np.int64),
                         np.array([item_index[r.item_id] for r in known], dtype=np.int64),
                         np.array([r.timestamp for r in known], dtype=np.float64), len(user_ids), len(item_ids))
    embeddings = None
    emb_path = root / EMBEDDINGS_FILE
    if emb_path.is_file():
        emb = ItemEmbeddings.load(emb_path)
        missing = set(item_ids) - set(emb.item_ids)
        if missing:
            raise ValueError(f"{emb_path} lacks {len(missing)} catalog items (e.g. {sorted(missing)[:3]}); "
                             "re-run `mixrec encode`")
        embeddings = emb.subset(item_ids)
    extra = {"interactions": log, "catalog_dir": str(root), "dropped_interactions": len(rows) - len(known)}
    return EvalData(user_ids=user_ids, item_ids=item_ids, items=items, embeddings=embeddings, extra=extra)
