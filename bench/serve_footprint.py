"""What a served Bento costs at rest: memory per service worker (RSS, PSS, USS) and seconds to ready.

    .venv/bin/python bench/serve_footprint.py [--baseline WORKTREE] [--rounds 3] [--text-workers 1,2] [--out F]

Each round starts ``bentoml serve`` on the demo artifacts (``--data-dir``, built by ``mixrec demo
--no-serve`` when absent) from this checkout and, with ``--baseline``, from another checkout (a ``git
worktree`` of an older commit), alternating, on fresh state; it times the start to ``/readyz``, makes
one request of each read API so every worker has done its first work, then reads every process of
the server's tree (``smaps_rollup`` through psutil) and groups them by the service each worker runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import psutil  # noqa: E402
import robustness as rb  # noqa: E402
from attacks import service_processes  # noqa: E402

MB = 2 ** 20


def footprint(srv: rb.Served) -> dict[str, dict]:
    """RSS / PSS / USS by service (attacks.service_processes: each worker's ``--service-name``), and
    the ``bentoml serve`` supervisor itself."""
    groups = {"supervisor": [psutil.Process(srv.tree.pid)], **service_processes(srv.tree.pid)}
    by_service: dict[str, dict] = {}
    for name, procs in groups.items():
        row = by_service.setdefault(name, {"processes": 0, "rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0})
        for proc in procs:
            try:
                mem = proc.memory_full_info()
            except psutil.NoSuchProcess:
                continue
            row["processes"] += 1
            row["rss_mb"] += mem.rss / MB
            row["pss_mb"] += mem.pss / MB
            row["uss_mb"] += mem.uss / MB
        for k in ("rss_mb", "pss_mb", "uss_mb"):
            row[k] = round(row[k], 1)
    return by_service


def touch(url: str, ids: dict[str, list[str]]) -> None:
    """One request per read API (the text query reaches the text encoder), so caches are what serving holds."""
    user, item = ids["users"][0], ids["items"][0]
    with httpx.Client(base_url=url, timeout=60) as c:
        for path, body in (("/recommend", {"user_id": user, "k": 10}),
                           ("/recommend_by_query", {"text": "a quiet acoustic song", "k": 10}),
                           ("/similar_items", {"item_id": item, "k": 10}),
                           ("/user_interests", {"user_id": user})):
            r = c.post(path, json=body)
            r.raise_for_status()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/tail-demo"))
    p.add_argument("--work", type=Path, default=Path("/tmp/serve-footprint"))
    p.add_argument("--baseline", type=Path, default=None, help="another checkout to serve beside this one")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--text-workers", default="1", help="comma-separated serving.text_encoder.workers values")
    p.add_argument("--out", type=Path, default=Path("/tmp/serve-footprint.json"))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    artifacts = rb.ensure_demo(args.data_dir, 120, 150)
    ids = rb.demo_ids(args.data_dir)
    sides = [("this", rb.ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    out = {"command": " ".join(sys.argv), "load_before": os.getloadavg(), "runs": []}
    for r in range(args.rounds):
        for workers in args.text_workers.split(","):
            for side, source in (sides if r % 2 == 0 else sides[::-1]):
                state = args.work / f"{side}-w{workers}-{r}"
                env = rb.serve_env(artifacts, state, MIXREC__SERVING__TEXT_ENCODER__WORKERS=workers)
                srv = rb.Served(env, state, source=source)
                load = os.getloadavg()[0]
                ready_s = srv.start()
                try:
                    touch(srv.url, ids)
                    time.sleep(1)
                    services = footprint(srv)
                finally:
                    srv.stop()
                run = {"side": side, "text_workers": int(workers), "round": r, "ready_s": round(ready_s, 2),
                       "load_at_start": load, "services": services,
                       "total_pss_mb": round(sum(s["pss_mb"] for s in services.values()), 1),
                       "total_rss_mb": round(sum(s["rss_mb"] for s in services.values()), 1)}
                out["runs"].append(run)
                print(json.dumps(run), flush=True)
    out["load_after"] = os.getloadavg()
    summary = {}
    for run in out["runs"]:
        key = f"{run['side']}, text workers {run['text_workers']}"
        s = summary.setdefault(key, {"ready_s": [], "total_pss_mb": [], "total_rss_mb": []})
        for k in s:
            s[k].append(run[k])
    out["medians"] = {k: {m: statistics.median(v) for m, v in s.items()} for k, s in summary.items()}
    print(json.dumps(out["medians"], indent=1))
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
