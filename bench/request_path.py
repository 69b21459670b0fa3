"""Request-path latency inside the engine (no HTTP): known-user recommend (plain, and with mix +
diversity + a tag filter) and recommend_by_query with liked items, on one synthetic catalog.

Written to check that routing every score through fusion/scoring.py and every ranking through
services/pipeline.py (issue 10) costs nothing: run it on two checkouts (``PYTHONPATH=<checkout>``)
and compare. Uses only APIs both sides of that change have (RecommenderEngine's constructor,
Options, bench.synthetic_catalog).

Usage: .venv/bin/python bench/request_path.py [--items 20000] [--requests 300] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _timed(fn, n: int) -> dict:
    fn(0)  # warm caches (item metadata, tables)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    t = np.asarray(times)
    return {"median_ms": round(float(np.median(t)), 3), "p95_ms": round(float(np.percentile(t, 95)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from bench.synthetic_catalog import bench_config, build
    from mixrec.config import load_config
    from mixrec.storage.media import MediaStore
    from mixrec.storage.store import CatalogStore
    from services.engine import Options, RecommenderEngine

    tmp = Path(tempfile.mkdtemp(prefix="mixrec-request-path-"))
    cfg = bench_config(load_config(REPO / "configs" / "offline.yaml", environ={}))
    cfg = cfg.model_copy(update={
        "storage": cfg.storage.model_copy(update={"url": f"sqlite:///{tmp / 'db.sqlite'}",
                                                  "media_dir": str(tmp / "media")}),
        "serving": cfg.serving.model_copy(update={"state_dir": str(tmp / "state"), "update_every": 0})})
    built = build(args.items, cfg, text_dim=64, n_users=2000)
    engine = RecommenderEngine(cfg, built.model, CatalogStore(cfg.storage.url), MediaStore(tmp / "media"))
    users = built.users
    items = [it.item_id for it in built.items]
    tag = built.items[0].tags[0]
    mixed = Options(k=10, mix={"product": 4, "video": 3, "audio": 3}, diversity=0.3, tags=[tag])
    out = {
        "items": args.items, "requests": args.requests,
        "recommend": _timed(lambda i: engine.recommend(users[i % len(users)], Options(k=10)), args.requests),
        "recommend_mix_diversity_tag": _timed(lambda i: engine.recommend(users[i % len(users)], mixed),
                                              args.requests),
        "recommend_by_query_liked": _timed(lambda i: engine.recommend_by_query(
            {}, [items[(7 * i) % len(items)], items[(7 * i + 3) % len(items)]], Options(k=10)), args.requests),
    }
    engine.close()
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
