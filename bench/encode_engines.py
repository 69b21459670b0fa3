"""Catalogue encoding throughput: ``mixrec encode --engine local`` vs ``--engine ray`` on one machine.

    .venv/bin/python bench/encode_engines.py --items 20000 --actors 2

A synthetic text catalogue (bench/synthetic_catalog.py's items, each with a ~20-word description
drawn from a fixed vocabulary, so MiniLM sees product-like text) encoded by the offline profile's
encoders, once by the local engine (one process, torch's threads) and once by a local Ray runtime
(``--actors`` actors, one CPU each). Prints items/s and the load average around each run, and writes
bench/results/encode_engines.json. Text only: the offline image/audio encoders are untrained, and the
ratio between the engines is what this measures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the repo: bench/encoders.py must not shadow encoders/

import numpy as np  # noqa: E402

WORDS = ("brass lamp warm light oak table linen jazz piano trumpet groove vinyl guitar lesson recipe travel "
         "camera lens hiking boots wool scarf ceramic mug coffee espresso ambient synth drum beat podcast "
         "story history science garden herbs kitchen knife steel leather wallet").split()


def catalogue(n: int):
    from synthetic_catalog import synthetic_items

    rng = np.random.default_rng(0)
    items, _ = synthetic_items(n, rng)
    return [it.model_copy(update={"description": " ".join(rng.choice(WORDS, 20))}) for it in items]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--config", default=str(ROOT / "configs" / "offline.yaml"))
    args = ap.parse_args()

    from mixrec.config import load_config
    from encoders.encode_catalog import encode_catalog
    from encoders.encode_ray import encode_catalog_ray

    cfg = load_config(args.config, environ={**os.environ, "MIXREC__ENCODE__RAY__ACTORS": str(args.actors),
                                            "MIXREC__ENCODE__RAY__BATCH_SIZE": str(args.batch_size)})
    items = catalogue(args.items)
    out = {"items": len(items), "actors": args.actors, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    for engine in ("local", "ray"):
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        if engine == "local":
            emb, _ = encode_catalog(cfg, ROOT, items=items, progress=False)
        else:
            emb, _ = encode_catalog_ray(cfg, ROOT, items=items, progress=False)
        seconds = time.perf_counter() - t0  # Ray's includes starting the runtime and the actors' model loads
        out[engine] = {"seconds": round(seconds, 1), "items_per_s": round(len(items) / seconds, 1),
                       "load_before": [round(x, 2) for x in load0],
                       "load_after": [round(x, 2) for x in os.getloadavg()]}
        print(engine, out[engine], flush=True)
        assert emb.masks["text"].all()
    path = ROOT / "bench" / "results" / "encode_engines.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
