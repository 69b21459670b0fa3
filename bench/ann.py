"""The ANN candidate path at 10k / 100k / 1M items: build, persist, load, memory, latency, recall, fallbacks.

Per size (and per repeat), a fresh subprocess over the artifacts ``bench/serving.py --phases build``
wrote (same synthetic catalogues, same ``--work`` directory):

  1. load the model (seconds, RSS);
  2. ``RecommenderEngine.recommend`` exactly (ANN off): p50 / p99 and the top-10 of each request;
  3. build the per-type HNSW indexes (``services.candidates``: seconds) and persist them (seconds, MB on disk);
  4. a new ``AnnCandidates`` over the same store loads them, as a restarted replica does (seconds,
     page cache warm: the files were just written), the ANN layer's bytes and the RSS it adds;
  5. the same requests through the loaded indexes: p50 / p99, recall@10 of the final top-10 against
     the exact run, the search / widening / exact-fallback counters and the sampled candidate recall.

``--variants`` tries other HNSW settings (``M:efConstruction:efSearch``) in the same worker (steps 3-5
each), so the choice is made by measurement. Results merge into ``--out`` (JSON), keyed by size, with
every repeat kept.

Usage: .venv/bin/python bench/ann.py --sizes 10000,100000 [--repeats 1] [--variants 16:80:128,32:100:64]
       flock /work/heavy.lock .venv/bin/python bench/ann.py --sizes 1000000 --repeats 1   # x3, one lock each
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.serving import _engine_for, artifacts_dir, merge_results, percentiles, vm_hwm_mb, vm_rss_mb  # noqa: E402


def _requests(engine, users, opts) -> tuple[dict, list[list[str]]]:
    for u in users[:10]:  # warm-up
        engine.recommend(u, opts)
    ms, tops = [], []
    for u in users:
        t = time.perf_counter()
        out = engine.recommend(u, opts)
        ms.append((time.perf_counter() - t) * 1000)
        tops.append([r["item_id"] for r in out["items"]])
    return percentiles(ms), tops


def _variant(engine, snap, users, opts, exact_tops, spec: str, store: Path) -> dict:
    from services import candidates
    from services.candidates import AnnCandidates

    m, efc, efs = (int(x) for x in spec.split(":"))
    candidates.HNSW_M, candidates.EF_CONSTRUCTION, candidates.EF_SEARCH = m, efc, efs
    rss0 = vm_rss_mb()
    built = AnnCandidates(1, store)
    t = time.perf_counter()
    built.refresh(snap, wait=True)  # builds, then persists
    build_and_persist = time.perf_counter() - t
    d = built.describe()
    build_s = d["last_build_seconds"]
    del built
    engine.ann = AnnCandidates(1, store)  # a restarted replica: loads what was persisted
    engine.pipeline.ann = engine.ann
    rss1 = vm_rss_mb()
    engine.ann.refresh(snap, wait=True)
    loaded = engine.ann.describe()
    assert loaded["loads"] == 1 and loaded["builds"] == 0, loaded
    ann, ann_tops = _requests(engine, users, opts)
    engine.ann.recall.drain()
    d = engine.ann.describe()
    recall = float(np.mean([len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(ann_tops, exact_tops)]))
    disk = sum(p.stat().st_size for p in store.iterdir())
    return {"hnsw": {"M": m, "efConstruction": efc, "efSearch": efs, "efMax": candidates.EF_MAX},
            "build_seconds": round(build_s, 2), "persist_seconds": round(build_and_persist - build_s, 2),
            "load_seconds": round(loaded["last_load_seconds"], 3), "ann_mb": round(d["bytes"] / 2 ** 20, 1),
            "disk_mb": round(disk / 2 ** 20, 1), "rss_mb_added_by_load": round(vm_rss_mb() - rss1, 1),
            "rss_mb_before_build": round(rss0, 1), "ann": ann, "recall_at_10": round(recall, 4),
            "searches": d["searches"], "widenings": d["widenings"], "reentries": d["reentries"],
            "exact_fallbacks": d["exact_fallbacks"],
            "exact_small": d["exact_small"],
            "exact_fallback_rate": round(d["exact_fallbacks"] / max(d["searches"], 1), 5),
            "sampled_candidate_recall": d["recall"], "recall_samples": d["recall_samples"]}


def worker(n: int, work: Path, requests: int, variants: list[str]) -> dict:
    from services.engine import Options

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine_for(artifacts_dir(work, n), ann_threshold=10 ** 12, tmp=Path(tmp))  # exact first
        load_s = time.perf_counter() - t0
        rss_model = vm_rss_mb()
        snap = engine.model.snapshot
        rng = np.random.default_rng(0)
        users = [snap.user_ids[i] for i in rng.integers(0, len(snap.user_ids), requests)]
        opts = Options(k=10, mix="interleave", explain=True)
        exact, exact_tops = _requests(engine, users, opts)
        out = {"items": len(snap.item_ids), "users": len(snap.user_ids), "requests": requests,
               "request": "recommend(k=10, mix=interleave, exclude_seen, explain)",
               "model_load_seconds": round(load_s, 1), "rss_mb_model": round(rss_model, 1), "exact": exact,
               "variants": []}
        for i, spec in enumerate(variants):
            out["variants"].append(_variant(engine, snap, users, opts, exact_tops, spec, Path(tmp) / f"ann-{i}"))
        out["peak_rss_mb"] = round(vm_hwm_mb(), 1)
        out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        engine.store.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--variants", default="16:80:128", help="HNSW M:efConstruction:efSearch, comma-separated")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixrec-bench-serving")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ann.json")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-timeout", type=int, default=1200)
    args = p.parse_args()
    variants = args.variants.split(",")
    if args.worker:
        from services.candidates import single_threaded_blas

        single_threaded_blas()
        print(json.dumps(worker(args.worker, args.work, args.requests, variants)))
        return
    results = json.loads(args.out.read_text()).get("ann", {}) if args.out.exists() else {}
    for n in (int(s) for s in args.sizes.split(",")):
        for r in range(args.repeats):
            cmd = [sys.executable, __file__, "--worker", str(n), "--work", str(args.work),
                   "--requests", str(args.requests), "--variants", args.variants]
            load_before = [round(x, 2) for x in os.getloadavg()]
            print(f"[ann] {n} repeat {r + 1}/{args.repeats}: load avg {load_before}", flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout)
            if done.returncode != 0:
                raise SystemExit(f"worker {n} failed:\n{done.stderr[-4000:]}")
            run = {"load_avg_start": load_before, **json.loads(done.stdout.strip().splitlines()[-1])}
            print(f"[ann] {n}: {json.dumps(run)}", flush=True)
            results.setdefault(str(n), []).append(run)
            merge_results(args.out, "ann", results)


if __name__ == "__main__":
    main()
