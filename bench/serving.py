"""Serving performance of mixrec: recommend latency vs catalog size (exact and ANN), encoder
throughput through the served Bento vs in-process, text-query latency, ingestion and update cost.

Phases (``--phases``, default all), each merging its figures into ``--out`` (JSON):
  build     synthetic catalogs of ``--sizes`` items trained through HybridModel.train, saved under
            ``--work`` (bench.synthetic_catalog; 384-d text vectors up to 100k so a served model
            answers real MiniLM queries, 64-d above to keep 1M in memory)
  latency   per size, in a fresh subprocess (its RSS is the serving footprint): load the artifacts,
            time RecommenderEngine.recommend inside the engine, exact and ANN, ANN recall@10
  http      serve the Recommender (real ``bentoml serve``) on the ``--http-size`` catalog: client-side
            recommend latency and recommend_by_query with text (real MiniLM encoder service)
  query_threads  in-process at --http-size: MiniLM batch-1 encode and engine query scoring, 1 torch thread vs
            torch's default (every core), alternating in one run
  encoder   TextEncoder served with adaptive batching, 1/8/32 concurrent clients sending single
            texts, against the same MiniLM in-process at its best batch size
  ingest    the demo catalog served: HTTP add_items throughput (text only, with images; sequential batches
            of 16 and 4 / 8 concurrent clients x 32 items) against the text encoder in-process at its best
            batch (same run, same texts), update_model (fit_partial) vs a full retrain
  memory    per size, in fresh subprocesses: model load time, RSS after load, peak RSS while loading,
            RSS after building the ANN indexes (the ANN part = the difference); then two processes
            loading the same memory-mapped artifacts at once: each one's RSS and PSS
            (/proc/<pid>/smaps_rollup). ``--repeats`` runs of the largest size (median + spread)
  writes    per size, in a fresh subprocess: model work of add_items / remove_items of 16 items
            (``--write-batches`` batches; the first add, which moves the loaded arrays into growable
            buffers, reported apart), and the Recommender's metadata update after an add
            (SnapshotMeta.build); recording feedback (add_interactions: 1 event, 16 users' events,
            a new user's event; ``--write-history`` more stored events first); ``--repeats`` runs
            of the largest size
  plot      bench/results/scaling.png from the JSON

Usage: .venv/bin/python bench/serving.py [--sizes 10000,100000,1000000] [--quick] [--phases latency,plot]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
OFFLINE = REPO / "configs" / "offline.yaml"
QUERIES = ["wireless noise cancelling headphones for running", "relaxing jazz piano for a rainy evening",
           "cast iron skillet for camping", "documentary about mountain travel", "upbeat rock for the gym",
           "beginner guide to baking sourdough bread", "kids science experiment kit", "ambient sounds to sleep"]


# ============================================================== small utilities
def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p95_ms": round(float(np.percentile(a, 95)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def merge_results(out: Path, key: str, value) -> None:
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = value
    data["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "load_avg_at_write": [round(x, 2) for x in os.getloadavg()]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_rss_mb() -> float:
    return _proc_status_mb("VmRSS")


def vm_hwm_mb() -> float:
    """Peak RSS of this process image (unlike ru_maxrss, not inherited from the parent across exec)."""
    return _proc_status_mb("VmHWM")


def base_config():
    from mixrec.config import load_config

    return load_config(OFFLINE, environ={})


def artifacts_dir(work: Path, n: int) -> Path:
    return work / f"catalog-{n}" / "artifacts"


# ============================================================== build
def phase_build(args) -> None:
    from bench.synthetic_catalog import bench_config, build

    cfg = bench_config(base_config())
    text_encoder = minilm_describe()
    report = {}
    for n in args.sizes:
        target = artifacts_dir(args.work, n)
        if (target / "meta.json").exists():
            print(f"[build] {n}: reusing {target}", flush=True)
            continue
        dim = 384 if n <= 100_000 else 64
        b = build(n, cfg, text_dim=dim, encoder=text_encoder if dim == 384 else None)
        t0 = time.perf_counter()
        b.model.save(target)
        report[str(n)] = {"train_seconds": round(b.build_seconds, 1), "save_seconds": round(time.perf_counter() - t0, 1),
                          "text_dim": dim, "peak_rss_mb_training": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
        print(f"[build] {n}: {report[str(n)]}", flush=True)
        del b
    if report:
        old = json.loads(args.out.read_text()).get("build", {}) if args.out.exists() else {}
        merge_results(args.out, "build", {**old, **report})


def minilm_describe() -> dict:
    """The text encoder's describe() as the artifacts record it, so served queries match (no weights loaded)."""
    cfg = base_config().encoders.text
    return {"kind": cfg.kind, "model": cfg.model, "dim": 384}


# ============================================================== latency (in a subprocess per size)
def phase_latency(args) -> None:
    results = json.loads(args.out.read_text()).get("latency", {}) if args.out.exists() else {}
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--latency-worker", str(n), "--work", str(args.work),
               "--requests", str(args.requests)]
        print(f"[latency] {n}: {' '.join(cmd[1:])}", flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout)
        if done.returncode != 0:
            raise SystemExit(f"latency worker {n} failed:\n{done.stderr[-4000:]}")
        results[str(n)] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"[latency] {n}: {results[str(n)]}", flush=True)
        merge_results(args.out, "latency", results)


def _engine_for(artifacts: Path, ann_threshold: int, tmp: Path):
    from fusion.hybrid import HybridModel
    from mixrec.config import load_config
    from mixrec.storage.media import MediaStore
    from mixrec.storage.store import CatalogStore
    from services.engine import RecommenderEngine

    env = {"MIXREC__SERVING__STATE_DIR": str(tmp / "state"), "MIXREC__STORAGE__URL": f"sqlite:///{tmp / 'db.sqlite'}",
           "MIXREC__SERVING__ANN_THRESHOLD": str(ann_threshold), "MIXREC__SERVING__UPDATE_EVERY": "0"}
    cfg = load_config(OFFLINE, environ=env)
    model = HybridModel.load(artifacts)
    # The store stays empty here (no 1M-row bootstrap): seen items come from the model snapshot,
    # and the engine still runs its per-request seen-items query against the (empty) database.
    return RecommenderEngine(cfg, model, CatalogStore(cfg.storage.url), MediaStore(tmp / "media"))


def latency_worker(n: int, work: Path, requests: int) -> dict:
    from services.engine import Options

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine_for(artifacts_dir(work, n), ann_threshold=1, tmp=Path(tmp))
        load_s = time.perf_counter() - t0
        rss = {"after_model_load": round(vm_rss_mb(), 1)}
        snap = engine.model.snapshot
        rng = np.random.default_rng(0)
        users = [snap.user_ids[i] for i in rng.integers(0, len(snap.user_ids), requests)]
        opts = Options(k=10, mix="interleave", explain=True)

        def run(mode: str) -> tuple[dict, list[list[str]]]:
            engine.ann.threshold = 1 if mode == "ann" else 10 ** 12
            for u in users[:10]:  # warm-up
                engine.recommend(u, opts)
            ms, tops = [], []
            for u in users:
                t = time.perf_counter()
                out = engine.recommend(u, opts)
                ms.append((time.perf_counter() - t) * 1000)
                tops.append([r["item_id"] for r in out["items"]])
            return percentiles(ms), tops

        exact, exact_tops = run("exact")
        rss["after_exact_requests"] = round(vm_rss_mb(), 1)
        t = time.perf_counter()
        engine.ann.threshold = 1
        engine.ann.refresh(snap, wait=True)
        build_s = time.perf_counter() - t
        ann, ann_tops = run("ann")
        rss["after_ann_build_and_requests"] = round(vm_rss_mb(), 1)
        recall = float(np.mean([len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(ann_tops, exact_tops)]))
        result = {"items": len(snap.item_ids), "users": len(snap.user_ids), "model_load_seconds": round(load_s, 1),
                  "request": "recommend(k=10, mix=interleave, exclude_seen, explain)",
                  "exact": exact, "ann": ann, "ann_recall_at_10": round(recall, 4),
                  "ann_build_seconds": round(build_s, 1), "rss_mb": round(vm_rss_mb(), 1), "rss_mb_stages": rss,
                  "peak_rss_mb": round(vm_hwm_mb(), 1)}
        engine.store.close()
    return result


# ============================================================== memory / writes (item state, issue 12 parts 1 and 3)
def _smaps_rollup_mb(pid: int | str = "self") -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:", "Shared_Clean:", "Private_Clean:", "Private_Dirty:"):
            out[parts[0][:-1].lower() + "_mb"] = round(int(parts[1]) / 1024, 1)
    return out


def memory_worker(n: int, work: Path, hold: Path | None) -> dict:
    """Load the model (engine with ANN on), build the ANN indexes; with ``hold``, report smaps once
    the file ``hold``.go exists (so a sibling process has loaded the same artifacts too)."""
    import services.engine  # noqa: F401  (imports are not load time)
    import mixrec.storage.store  # noqa: F401

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine_for(artifacts_dir(work, n), ann_threshold=1, tmp=Path(tmp))
        load_s = time.perf_counter() - t0
        result = {"items": len(engine.model.snapshot.item_ids), "model_load_seconds": round(load_s, 2),
                  "rss_mb_after_load": round(vm_rss_mb(), 1), "peak_rss_mb_during_load": round(vm_hwm_mb(), 1),
                  "smaps_after_load": _smaps_rollup_mb()}
        t = time.perf_counter()
        engine.ann.refresh(engine.model.snapshot, wait=True)
        result["ann_build_seconds"] = round(time.perf_counter() - t, 1)
        result["rss_mb_with_ann"] = round(vm_rss_mb(), 1)
        result["ann_part_mb"] = round(result["rss_mb_with_ann"] - result["rss_mb_after_load"], 1)
        result["peak_rss_mb"] = round(vm_hwm_mb(), 1)
        if hold is not None:
            hold.with_suffix(".ready").write_text(str(os.getpid()))
            deadline = time.time() + 600
            while not hold.with_suffix(".go").exists() and time.time() < deadline:
                time.sleep(0.2)
        result["smaps_with_ann"] = _smaps_rollup_mb()
        engine.store.close()
    return result


def _worker(flag: str, n: int, args, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, __file__, flag, str(n), "--work", str(args.work), *extra]
    print(f"[{flag[2:]}] {' '.join(cmd[1:])}", flush=True)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: int) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed:\n{err[-4000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _spread(runs: list[dict], key: str) -> dict:
    vals = [r[key] for r in runs]
    return {"median": round(float(np.median(vals)), 3), "min": round(min(vals), 3), "max": round(max(vals), 3)}


def phase_memory(args) -> None:
    results = json.loads(args.out.read_text()).get("memory", {}) if args.out.exists() else {}
    top = max(args.sizes)
    for n in args.sizes:
        runs = [_result(_worker("--memory-worker", n, args), args.worker_timeout)
                for _ in range(args.repeats if n == top else 1)]
        entry = {"runs": runs, "load_avg": [round(x, 2) for x in os.getloadavg()]}
        for key in ("model_load_seconds", "rss_mb_after_load", "peak_rss_mb_during_load", "rss_mb_with_ann",
                    "ann_part_mb"):
            entry[key] = _spread(runs, key)
        if n == top:  # two workers sharing the memory-mapped artifacts
            with tempfile.TemporaryDirectory() as tmp:
                holds = [Path(tmp) / f"w{i}" for i in range(2)]
                procs = [_worker("--memory-worker", n, args, ["--hold", str(h)]) for h in holds]
                deadline = time.time() + args.worker_timeout
                while not all(h.with_suffix(".ready").exists() for h in holds) and time.time() < deadline:
                    time.sleep(0.5)
                for h in holds:
                    h.with_suffix(".go").write_text("")
                entry["two_workers"] = [_result(p, args.worker_timeout) for p in procs]
        results[str(n)] = entry
        print(f"[memory] {n}: {json.dumps({k: v for k, v in entry.items() if k not in ('runs', 'two_workers')})}",
              flush=True)
        merge_results(args.out, "memory", results)


def feedback_timings(model, rng, batches: int, batch: int, history: int, pool: int) -> dict:
    """Model work of recording feedback (``HybridModel.add_interactions``), ms per call: one event of
    a known user, ``batch`` events of as many known users, one event of a new user. ``history``
    extra stored events first (over ``history // 20`` new users), to show how the cost grows with
    the stored history rather than the catalogue. Events name the first ``pool`` items only (the
    catalogue as built), so the items the run added stay unliked for the delete timings."""
    from mixrec.catalog import Interaction

    ids = model.snapshot.item_ids[:pool]
    out: dict = {"stored_events_before": sum(len(r) for r in model.positives.values())}
    if history:
        n_users = max(1, history // 20)
        picks = rng.integers(0, len(ids), history)
        t = time.perf_counter()
        model.add_interactions([Interaction(f"hist{k % n_users}", ids[int(j)], "like", 1.0, 1.7e9 + k)
                                for k, j in enumerate(picks)])
        out["history_added"] = history
        out["history_add_s"] = round(time.perf_counter() - t, 2)
    users = list(model.snapshot.user_ids)
    out["stored_events"] = sum(len(r) for r in model.positives.values())
    out["users"] = len(users)

    def timed(make) -> list[float]:
        ms = []
        for b in range(batches):
            events = make(b)
            t = time.perf_counter()
            model.add_interactions(events)
            ms.append((time.perf_counter() - t) * 1000)
        return ms

    def like(user: str, b: int) -> Interaction:
        return Interaction(user, ids[int(rng.integers(len(ids)))], "like", 1.0, 1.8e9 + b)

    one = timed(lambda b: [like(users[int(rng.integers(len(users)))], b)])
    many = timed(lambda b: [like(users[int(u)], b) for u in rng.choice(len(users), batch, replace=False)])
    new = timed(lambda b: [like(f"fb-new-{b}", b)])
    med = lambda xs: round(float(np.median(xs)), 2)  # noqa: E731
    out.update(feedback_1_ms_median=med(one), feedback_1_ms_max=round(max(one), 2),
               feedback_batch_ms_median=med(many), feedback_new_user_ms_median=med(new))
    return out


def writes_worker(n: int, work: Path, batches: int, batch: int = 16, history: int = 0) -> dict:
    from fusion.hybrid import HybridModel
    from mixrec.catalog import Item
    from mixrec.embeddings import ItemEmbeddings
    from services.candidates import SnapshotMeta

    t0 = time.perf_counter()
    model = HybridModel.load(artifacts_dir(work, n))
    load_s = time.perf_counter() - t0
    dims = model.space.dims
    enc = dict(model.space.encoders)
    rng = np.random.default_rng(1)

    def new_batch(b: int) -> tuple[list, ItemEmbeddings]:
        items = [Item(item_id=f"w{b}-{i}", type=("product", "video", "audio")[i % 3], title=f"written {b} {i}",
                      tags=[f"c{rng.integers(40)}", "fresh"]) for i in range(batch)]
        vecs = {m: rng.standard_normal((batch, d)).astype(np.float32) for m, d in dims.items()}
        vecs = {m: v / np.linalg.norm(v, axis=1, keepdims=True) for m, v in vecs.items()}
        return items, ItemEmbeddings([it.item_id for it in items], vecs,
                                     {m: np.ones(batch, bool) for m in dims}, enc)

    meta = SnapshotMeta.build(model.snapshot)
    add_ms, meta_ms = [], []
    for b in range(batches + 1):
        items, emb = new_batch(b)
        t = time.perf_counter()
        model.add_items(items, emb)
        add_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        meta = SnapshotMeta.build(model.snapshot, previous=meta)
        meta_ms.append((time.perf_counter() - t) * 1000)
    feedback = feedback_timings(model, rng, batches, batch, history, n)
    # Deletes: catalogue items picked at random (a batch with an item someone liked also recomputes
    # those users' rows), then the items this run added (nobody liked them).
    ids = list(model.snapshot.item_ids)[:n]
    picks = rng.choice(len(ids), size=(batches, batch), replace=False)
    liked = {i for row in model.positives.values() for i in row}
    del_ms, del_liked, del_meta_ms = [], 0, []

    def recommender_meta() -> None:
        # What the Recommender does on its next request (services/pipeline.py RankingPipeline.meta):
        # reuse the metadata when the rows are the same (a tombstoning delete), else rebuild / extend it.
        nonlocal meta
        t = time.perf_counter()
        snap = model.snapshot
        if not (meta.ids is snap.item_ids or meta.ids == snap.item_ids):
            meta = SnapshotMeta.build(snap, previous=meta)
        del_meta_ms.append((time.perf_counter() - t) * 1000)

    for row in picks:
        gone = [ids[j] for j in row]
        del_liked += any(i in liked for i in gone)
        t = time.perf_counter()
        model.remove_items(gone)
        del_ms.append((time.perf_counter() - t) * 1000)
        recommender_meta()
    del_added_ms = []
    for b in range(1, batches + 1):
        t = time.perf_counter()
        model.remove_items([f"w{b}-{i}" for i in range(batch)])
        del_added_ms.append((time.perf_counter() - t) * 1000)
        recommender_meta()
    med = lambda xs: round(float(np.median(xs)), 2)  # noqa: E731
    return {"items": n, "model_load_seconds": round(load_s, 2), "batch": batch, "batches": batches,
            "first_add_ms": round(add_ms[0], 2), "add_ms_median": med(add_ms[1:]), "add_ms_max": round(max(add_ms[1:]), 2),
            "snapshot_meta_ms_median": med(meta_ms[1:]), "delete_ms_median": med(del_ms),
            "delete_ms_max": round(max(del_ms), 2), "delete_batches_with_a_liked_item": del_liked,
            "delete_unliked_ms_median": med(del_added_ms), "meta_after_delete_ms_median": med(del_meta_ms),
            "meta_after_delete_ms_max": round(max(del_meta_ms), 2), "feedback": feedback, "rss_mb": round(vm_rss_mb(), 1)}


def phase_writes(args) -> None:
    results = json.loads(args.out.read_text()).get("writes", {}) if args.out.exists() else {}
    top = max(args.sizes)
    for n in args.sizes:
        runs = [_result(_worker("--writes-worker", n, args, ["--write-batches", str(args.write_batches),
                                                              "--write-history", str(args.write_history)]),
                        args.worker_timeout) for _ in range(args.repeats if n == top else 1)]
        entry = {"runs": runs, "load_avg": [round(x, 2) for x in os.getloadavg()]}
        for key in ("add_ms_median", "first_add_ms", "snapshot_meta_ms_median", "delete_ms_median",
                    "delete_unliked_ms_median", "meta_after_delete_ms_median"):
            entry[key] = _spread(runs, key)
        for key in ("feedback_1_ms_median", "feedback_batch_ms_median", "feedback_new_user_ms_median"):
            entry[key] = _spread([r["feedback"] for r in runs], key)
        results[str(n)] = entry
        print(f"[writes] {n}: {json.dumps({k: v for k, v in entry.items() if k != 'runs'})}", flush=True)
        merge_results(args.out, "writes", results)


# ============================================================== HTTP: served Recommender
def served_recommender(artifacts: Path, tmp: Path, extra_env: dict | None = None):
    from tests.server_harness import serve_bento

    env = {"MIXREC_CONFIG": str(OFFLINE), "MIXREC__SERVING__ARTIFACTS": str(artifacts),
           "MIXREC__SERVING__STATE_DIR": str(tmp / "state"), "MIXREC__STORAGE__URL": f"sqlite:///{tmp / 'db.sqlite'}",
           "MIXREC__STORAGE__MEDIA_DIR": str(tmp / "media"), "MIXREC__SERVING__UPDATE_EVERY": "0",
           "BENTOML_HOME": str(tmp / "bentoml"), **(extra_env or {})}
    return serve_bento("services.recommender:Recommender", env=env, log_dir=tmp, timeout_s=600)


def tree_rss_mb(server) -> dict:
    """RSS of each process of the served Bento, by the service it runs."""
    import psutil

    out = {}
    root = psutil.Process(server.tree.pid)
    for p in [root] + root.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            name = next((s for s in ("Recommender", "TextEncoder", "ImageEncoder", "AudioEncoder") if s in cmd),
                        f"pid{p.pid}")
            out[name] = round(out.get(name, 0) + p.memory_info().rss / 2 ** 20, 1)
        except psutil.Error:
            continue
    return out


def timed_posts(client, path: str, bodies: list[dict]) -> list[float]:
    ms = []
    for body in bodies:
        t = time.perf_counter()
        r = client.post(path, json=body)
        ms.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return ms


def phase_http(args) -> None:
    import httpx
    from fusion.hybrid import HybridModel

    n = args.http_size
    art = artifacts_dir(args.work, n)
    users = list(HybridModel.load(art).snapshot.user_ids)  # (the bench process, not the server)
    rng = np.random.default_rng(1)
    result = {"items": n}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # Exact scoring (threshold above the catalog): the 100k exact target is the one quoted.
        with served_recommender(art, Path(tmp), {"MIXREC__SERVING__ANN_THRESHOLD": str(10 * n)}) as server:
            result["startup_seconds"] = round(time.perf_counter() - t0, 1)
            with httpx.Client(base_url=server.url, timeout=120) as c:
                rec = [{"user_id": users[i], "k": 10, "mix": "interleave"}
                       for i in rng.integers(0, len(users), args.requests)]
                timed_posts(c, "/recommend", rec[:10])
                result["recommend_exact"] = percentiles(timed_posts(c, "/recommend", rec))
                qs = [{"text": QUERIES[i % len(QUERIES)] + f" {i}", "k": 10, "mix": "interleave"}
                      for i in range(args.queries)]
                timed_posts(c, "/recommend_by_query", qs[:5])
                result["recommend_by_query_text"] = percentiles(timed_posts(c, "/recommend_by_query", qs))
            result["rss_mb"] = tree_rss_mb(server)
    merge_results(args.out, "http", result)
    print(f"[http] {result}", flush=True)


# ============================================================== text query, in-process, by thread count
def phase_query_threads(args) -> None:
    """A text query's two costs at --http-size, in this process: MiniLM batch 1 and the engine's query
    scoring, with 1 torch thread and with torch's default (every core), alternating, in one run."""
    import torch

    from encoders.registry import build_encoder
    from services.engine import Options

    cfg = base_config()
    enc = build_encoder(cfg.encoders.text, cfg.limits)
    default = torch.get_num_threads()
    result = {"items": args.http_size, "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    samples: dict[int, dict[str, list[float]]] = {t: {"encode": [], "engine": []} for t in sorted({1, default})}
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine_for(artifacts_dir(args.work, args.http_size), 10 * args.http_size, Path(tmp))
        for i in range(2 * args.queries):
            for threads, ms in samples.items():  # alternate, so both see the same host load
                torch.set_num_threads(threads)
                t = time.perf_counter()
                v = enc.encode([f"{QUERIES[i % len(QUERIES)]} {i}"])[0]
                ms["encode"].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                engine.recommend_by_query({"text": v}, [], Options(k=10, mix="interleave"))
                ms["engine"].append((time.perf_counter() - t) * 1000)
        engine.store.close()
    torch.set_num_threads(default)
    warm = 10
    result["by_threads"] = {str(t): {k: percentiles(v[warm:]) for k, v in ms.items()} for t, ms in samples.items()}
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    merge_results(args.out, "query_threads", result)
    print(f"[query_threads] {result}", flush=True)


# ============================================================== encoder throughput
def phase_encoder(args) -> None:
    import httpx
    from encoders.registry import build_encoder
    from tests.server_harness import serve_bento

    cfg = base_config()
    texts = [f"{QUERIES[i % len(QUERIES)]} number {i}" for i in range(4096)]
    enc = build_encoder(cfg.encoders.text, cfg.limits)
    inproc = {}
    for bs in (1, 8, 32, 64):
        enc.encode(texts[:bs])  # warm-up
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.encoder_seconds:
            enc.encode(texts[done % 2048: done % 2048 + bs])
            done += bs
        inproc[str(bs)] = round(done / (time.perf_counter() - t0), 1)
    del enc
    best = max(inproc.values())
    sv = cfg.serving.text_encoder
    runs = []
    # The configured batching, then each --encoder-latency-ms candidate (an env override of the same config).
    settings = [None] + [int(v) for v in args.encoder_latency_ms.split(",") if v]
    for latency in settings:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"MIXREC_CONFIG": str(OFFLINE), "BENTOML_HOME": str(Path(tmp) / "bentoml")}
            if latency is not None:
                env["MIXREC__SERVING__TEXT_ENCODER__MAX_LATENCY_MS"] = str(latency)
            served = {}
            with serve_bento("services.text_encoder:TextEncoder", env=env, log_dir=Path(tmp), timeout_s=300) as server:
                for clients in (1, 8, 32):
                    served[str(clients)] = _hammer(server.url, texts, clients, args.encoder_seconds, httpx)
        run = {"max_batch_size": sv.max_batch_size, "max_latency_ms": latency or sv.max_latency_ms,
               "configured_default": latency is None, "by_clients": served,
               "ratio_32_clients": round(served["32"]["items_per_s"] / best, 3)}
        runs.append(run)
        print(f"[encoder] {run}", flush=True)
    result = {"in_process_items_per_s_by_batch": inproc, "in_process_best": best, "served": runs,
              "texts": "one sentence each (~8 words), sent one per request"}
    merge_results(args.out, "encoder", result)


def _hammer(url: str, texts: list[str], clients: int, seconds: float, httpx) -> dict:
    """Successful items/s (and rejected requests) with ``clients`` threads each posting one text to /encode."""
    stop = threading.Event()
    ok, rejected = [0] * clients, [0] * clients
    lock = threading.Lock()
    window = {"ok": 0, "rejected": 0}

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            j = i
            while not stop.is_set():
                r = c.post("/encode", json={"texts": [texts[j % len(texts)]]})
                if r.status_code == 200:
                    ok[i] += 1
                elif r.status_code in (429, 503):  # the batcher shed the request (max_latency_ms)
                    rejected[i] += 1
                else:
                    r.raise_for_status()
                j += clients

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, i) for i in range(clients)]
        time.sleep(3.0)  # warm-up: every client connected, the batcher's latency model primed
        with lock:
            window["ok"], window["rejected"] = sum(ok), sum(rejected)
        t0 = time.perf_counter()
        time.sleep(seconds)
        n_ok, n_rej = sum(ok) - window["ok"], sum(rejected) - window["rejected"]
        elapsed = time.perf_counter() - t0
        stop.set()
        for f in futures:
            f.result()
    return {"items_per_s": round(n_ok / elapsed, 1), "rejected_per_s": round(n_rej / elapsed, 1)}


# ============================================================== ingestion and updates
def _png_b64(rng) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def inprocess_text_best(texts: list[str], seconds: float) -> dict:
    """The served text encoder's config, in this process: items/s at batch 8/16/32/64, with 1 thread and with
    torch's default (every core); the best of all is the target's denominator."""
    import torch

    from encoders.registry import build_encoder

    cfg = base_config()
    enc = build_encoder(cfg.encoders.text, cfg.limits)
    default = torch.get_num_threads()
    out = {}
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        for bs in (8, 16, 32, 64):
            enc.encode(texts[:bs])  # warm-up
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                enc.encode(texts[done % 1024: done % 1024 + bs])
                done += bs
            out[f"{threads}t_{bs}"] = round(done / (time.perf_counter() - t0), 1)
    torch.set_num_threads(default)
    del enc
    return out


def _cpu_by_service(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of each service's workers (attacks.service_processes)."""
    import psutil
    from attacks import service_processes

    out: dict[str, float] = {}
    for name, procs in service_processes(root_pid).items():
        for proc in procs:
            try:
                cpu = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[name] = out.get(name, 0.0) + cpu.user + cpu.system
    return out


def _concurrent_adds(c_url: str, batches: list[list[dict]], clients: int) -> float:
    """items/s with ``clients`` threads posting the batches (each a fresh add_items request)."""
    import httpx

    def post(batch: list[dict]) -> None:
        with httpx.Client(base_url=c_url, timeout=300) as c:
            c.post("/add_items", json={"items": batch}).raise_for_status()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, batches))
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def phase_ingest(args) -> None:
    import httpx
    from fusion.hybrid import HybridModel
    from mixrec.catalog import read_interactions, read_items
    from mixrec.config import load_config
    from mixrec.embeddings import ItemEmbeddings

    demo = args.demo_dir
    if not (demo / "artifacts" / "meta.json").exists():
        raise SystemExit(f"no demo artifacts in {demo}: run `.venv/bin/mixrec demo --no-serve --data-dir {demo}`")
    rng = np.random.default_rng(2)
    result = {"catalog": str(demo), "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    n_add = args.add_items

    def items(prefix: str, n: int, image: bool = False) -> list[dict]:
        return [{"item_id": f"{prefix}-{i}", "type": "product", "title": f"{QUERIES[i % 8]} {i}",
                 "description": "benchmark item", "tags": ["bench"],
                 **({"image_b64": _png_b64(rng)} if image else {})} for i in range(n)]

    # The target's denominator, measured in this run on the same texts the HTTP calls carry (title. description. tags).
    texts = [f"{it['title']}. {it['description']}. tags: bench" for it in items("x", 1024)]
    result["text_encoder_in_process_items_per_s"] = inproc = inprocess_text_best(texts, args.encoder_seconds / 3)
    best = max(inproc.values())
    print(f"[ingest] in-process text encoder by batch: {inproc}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        with served_recommender(demo / "artifacts", Path(tmp)) as server, \
                httpx.Client(base_url=server.url, timeout=300) as c:
            def add(batch: list[dict]) -> None:
                c.post("/add_items", json={"items": batch}).raise_for_status()

            for label, image in (("text_only", False), ("with_image", True)):
                batch = items(f"bench-{label}", n_add, image)
                add([{**batch[0], "item_id": f"warm-{label}"}])
                t0 = time.perf_counter()
                for lo in range(0, n_add, 16):
                    add(batch[lo:lo + 16])
                result[f"add_items_{label}_items_per_s"] = round(n_add / (time.perf_counter() - t0), 2)
            # Concurrent clients, text only: the encoder batches across requests (BentoML adaptive batching).
            for clients, size in ((4, 32), (8, 32)):
                fresh = items(f"bench-c{clients}", args.add_items_concurrent)
                cpu0, t0 = _cpu_by_service(server.tree.pid), time.perf_counter()
                rate = _concurrent_adds(server.url, [fresh[i:i + size] for i in range(0, len(fresh), size)], clients)
                cpu1, wall = _cpu_by_service(server.tree.pid), time.perf_counter() - t0
                # Cores each service kept busy in the window: a text encoder near 1.0 (its one thread) is
                # saturated, and the gap to the in-process best is the encoder's own per-item cost.
                cores = {k: round((cpu1.get(k, 0.0) - cpu0.get(k, 0.0)) / wall, 2) for k in cpu1}
                result[f"add_items_text_only_{clients}_clients_x{size}_items_per_s"] = round(rate, 1)
                result[f"add_items_text_only_{clients}_clients_x{size}_busy_cores"] = cores
                print(f"[ingest] {clients} clients x {size} items: {rate:.1f} items/s ({rate / best:.2f} of "
                      f"in-process best {best}); busy cores by service {cores}", flush=True)
            result["text_only_ratio_to_in_process_best"] = {
                k.removeprefix("add_items_text_only_").removesuffix("_items_per_s"): round(v / best, 3)
                for k, v in result.items() if k.startswith("add_items_text_only") and k.endswith("_items_per_s")}
            info = c.post("/info", json={}).json()
            events = [{"user_id": f"bench-user-{i % 20}", "item_id": f"bench-text_only-{i % n_add}", "event": "like"}
                      for i in range(200)]
            c.post("/feedback", json={"events": events}).raise_for_status()
            t0 = time.perf_counter()
            upd = c.post("/update_model", json={"wait": True}).json()
            result["update_model_http_seconds"] = round(time.perf_counter() - t0, 2)
            result["update_model_fit_partial_seconds"] = upd.get("last_update_seconds")
            result["catalog_items_after"] = info.get("model", {}).get("items")
    cfg = load_config(OFFLINE, environ={})
    items_, inter = read_items(demo), read_interactions(demo)
    emb = ItemEmbeddings.load(next(demo.glob("embeddings*.npz")))
    t0 = time.perf_counter()
    model = HybridModel.train(items_, emb, inter, cfg)
    result["full_retrain_seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    model.fit_partial(epochs=cfg.serving.update_epochs)
    result["fit_partial_in_process_seconds"] = round(time.perf_counter() - t0, 2)
    result["update_epochs"] = cfg.serving.update_epochs
    result["full_epochs"] = cfg.model.epochs
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    merge_results(args.out, "ingest", result)
    print(f"[ingest] {result}", flush=True)


# ============================================================== plot
def phase_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(args.out.read_text())["latency"]
    sizes = sorted(int(k) for k in data)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, style in (("exact", "o-"), ("ann", "s--")):
        for q, alpha in (("p50_ms", 1.0), ("p99_ms", 0.55)):
            ax1.plot(sizes, [data[str(s)][mode][q] for s in sizes], style, alpha=alpha, label=f"{mode} {q[:3]}")
    ax1.axhline(20, color="grey", lw=0.8, ls=":", label="20 ms (p99 target, 100k exact)")
    ax1.axhline(30, color="grey", lw=0.8, ls="-.", label="30 ms (p99 target, 1M ANN)")
    ax1.set(xscale="log", yscale="log", xlabel="catalog items", ylabel="recommend latency in the engine (ms)",
            title="Latency (k=10, interleave mix, exclude seen, explain)")
    ax1.legend(fontsize=8)
    ax2.plot(sizes, [data[str(s)]["rss_mb"] for s in sizes], "o-", label="RSS after the run")
    ax2.plot(sizes, [data[str(s)]["peak_rss_mb"] for s in sizes], "s--", label="peak RSS")
    ax2.axhline(1536, color="grey", lw=0.8, ls=":", label="1.5 GB target")
    ax2.set(xscale="log", xlabel="catalog items", ylabel="serving process memory (MB)", title="Memory")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    png = args.out.parent / "scaling.png"
    fig.savefig(png, dpi=110)
    print(f"[plot] {png}", flush=True)


# ============================================================== main
PHASES = {"build": phase_build, "latency": phase_latency, "http": phase_http, "query_threads": phase_query_threads,
          "encoder": phase_encoder, "ingest": phase_ingest, "memory": phase_memory, "writes": phase_writes,
          "plot": phase_plot}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--quick", action="store_true", help="small sizes and few requests (a smoke run)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.json")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mixrec-bench-serving")
    p.add_argument("--demo-dir", type=Path, default=Path(tempfile.gettempdir()) / "perf-demo")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--http-size", type=int, default=100_000)
    p.add_argument("--encoder-seconds", type=float, default=12.0)
    p.add_argument("--encoder-latency-ms", default="", help="extra max_latency_ms values to try, e.g. 2000,10000")
    p.add_argument("--add-items", type=int, default=64)
    p.add_argument("--add-items-concurrent", type=int, default=512, help="items per concurrent add_items run")
    p.add_argument("--worker-timeout", type=int, default=580)
    p.add_argument("--repeats", type=int, default=3, help="runs of the largest size (memory, writes)")
    p.add_argument("--write-batches", type=int, default=20)
    p.add_argument("--write-history", type=int, default=0,
                   help="writes: stored events added before the feedback timings (cost vs history)")
    p.add_argument("--latency-worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--memory-worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--writes-worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--hold", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.latency_worker:
        print(json.dumps(latency_worker(args.latency_worker, args.work, args.requests)))
        return
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.work, args.hold)))
        return
    if args.writes_worker:
        print(json.dumps(writes_worker(args.writes_worker, args.work, args.write_batches, history=args.write_history)))
        return
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.sizes = [s for s in args.sizes if s <= 10_000] or [2000]
        args.http_size = min(args.sizes)
        args.requests, args.queries, args.encoder_seconds, args.add_items = 50, 20, 4.0, 16
        args.add_items_concurrent = 64
    for name in args.phases.split(","):
        print(f"== {name}", flush=True)
        PHASES[name](args)


if __name__ == "__main__":
    main()
