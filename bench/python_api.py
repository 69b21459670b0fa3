"""The Python API (tools/api/) on MovieLens 100K held in memory: encoding cold vs cached, fit, batch top-k.

    .venv/bin/python bench/python_api.py [--data-dir DIR] [--out bench/results/python_api.json]

ml-100k is read in place (``--data-dir``, ``$MIXREC_MOVIELENS_DIR`` or ../shared/data/ml-100k) and handed
to the API as lists of dicts, as a user's own data would be. Figures: the 1,682 movie texts through
``encode_catalog`` in catalogue order (what ``mixrec encode`` runs) and through ``encode_items`` (length-
sorted) with the same loaded encoders; ``encode_items`` with an empty cache (loads the encoders itself),
then again with every vector cached (the encoders are not loaded); one ``fit`` with the offline config;
top-10 for all 943 users in one ``top_k`` call, one call per user, and ``HybridModel.recommend`` per user.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import api as mixrec  # noqa: E402
from tools.datasets.movielens import load_movielens  # noqa: E402


def rows_of(data) -> tuple[list[dict], list[dict]]:
    items = [it.model_dump(exclude_none=True) for it in data.items]
    log = data.extra["interactions"]
    events = [{"user_id": data.user_ids[u], "item_id": data.item_ids[i], "timestamp": float(t)}
              for u, i, t in zip(log.users.tolist(), log.items.tolist(), log.timestamps.tolist())]
    return items, events


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="bench/results/python_api.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    data = load_movielens(args.data_dir)
    item_rows, event_rows = rows_of(data)
    catalog = mixrec.items(item_rows)
    res: dict = {"items": len(catalog), "interactions": len(event_rows), "load_before": load_before}
    from encoders.encode_catalog import CatalogEncoders, encode_catalog

    cfg = mixrec.resolve_config()
    encoders, res["encoder_load_s"] = timed(lambda: CatalogEncoders.from_config(cfg))
    # Before: the catalogue in its own order through encode_catalog (what `mixrec encode` runs).
    _, res["encode_catalog_order_s"] = timed(lambda: encode_catalog(cfg, Path("/"), items=list(catalog.items),
                                                                    progress=False, encoders=encoders))
    _, res["encode_sorted_nocache_s"] = timed(lambda: mixrec.encode_items(catalog, cfg, cache_dir=None, progress=False,
                                                                          encoders=encoders))
    with tempfile.TemporaryDirectory() as cache:
        cold = mixrec.EncodeReport()
        emb, res["encode_cold_s"] = timed(lambda: mixrec.encode_items(catalog, cache_dir=cache, report=cold,
                                                                       progress=False))
        warm = mixrec.EncodeReport()
        _, res["encode_cached_s"] = timed(lambda: mixrec.encode_items(catalog, cache_dir=cache, report=warm,
                                                                       progress=False))
    res["encode_counts"] = {"cold": [cold.cached, cold.encoded], "cached": [warm.cached, warm.encoded]}
    model, res["fit_s"] = timed(lambda: mixrec.fit(catalog, emb, event_rows))
    users = model.users
    _, res["top_k_batch_s"] = timed(lambda: model.top_k(users, k=10))
    _, res["top_k_per_user_s"] = timed(lambda: [model.top_k([u], k=10) for u in users])
    # Before: the reader's per-user recommend (it also builds each item's explanation).
    _, res["reader_recommend_per_user_s"] = timed(lambda: [model.hybrid.recommend(u, k=10) for u in users])
    res["users"] = len(users)
    res["load_after"] = os.getloadavg()
    res["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print(f"encoders load {res['encoder_load_s']:.1f}s; encode_catalog in catalogue order "
          f"{res['encode_catalog_order_s']:.1f}s, encode_items sorted, no cache {res['encode_sorted_nocache_s']:.1f}s")
    print(f"encode: {res['encode_cold_s']:.2f}s cold, {res['encode_cached_s']:.2f}s cached "
          f"({res['encode_cold_s'] / res['encode_cached_s']:.0f}x); fit {res['fit_s']:.1f}s; "
          f"top-10 for {len(users)} users: {res['top_k_batch_s']:.3f}s in one call, "
          f"{res['top_k_per_user_s']:.3f}s one call per user, {res['reader_recommend_per_user_s']:.3f}s "
          "HybridModel.recommend per user")


if __name__ == "__main__":
    main()
