"""Encoder batching over HTTP: ``add_items`` of 32 text-only items and ``recommend_by_query`` with 4 images.

    .venv/bin/python bench/api_batching.py
    git -C /work/main worktree add -f /tmp/batching-old main       # the code before, for a before/after table
    .venv/bin/python bench/api_batching.py --baseline-src /tmp/batching-old
    git -C /work/main worktree remove --force /tmp/batching-old

Each source tree is served by a real ``bentoml serve services.recommender:Recommender`` (three
encoder services + the Recommender, loopback, fresh SQLite state) from the same demo artifacts
(``mixrec demo --no-serve``, built under ``--data-dir`` when absent, never in the repository).
After one warm-up call of each kind, every measured call is timed from request to answer:

  add_items_32_text   one ``add_items`` request with 32 new text-only items (fresh ids each time)
  query_4_images      one ``recommend_by_query`` with 4 base64 PNG images (64x64) and k=10

With ``--baseline-src`` the two trees are served alternately, ``--rounds`` times each, so both
see the same machine load; medians over all rounds are reported with their ratio. Writes
bench/results/api_batching.json and the ``api-batching`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
from fresh_feedback import write_section  # noqa: E402
from robustness import Served, ensure_demo, serve_env  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "api_batching.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
START, END = "<!-- api-batching:start -->", "<!-- api-batching:end -->"
CASES = ("add_items_32_text", "query_4_images")


def _png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _timed(client: httpx.Client, path: str, payload: dict) -> float:
    t0 = time.perf_counter()
    r = client.post(path, json=payload)
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:500]}")
    return ms


def _items(tag: str, n: int = 32) -> list[dict]:
    return [{"item_id": f"bench-{tag}-{i}", "type": "product", "title": f"Bench item {tag} {i}",
             "description": "a plain text-only item added by bench/api_batching.py", "tags": ["bench"]}
            for i in range(n)]


def measure(url: str, repeats: int) -> dict[str, list[float]]:
    images = [base64.b64encode(_png(s)).decode() for s in range(4)]
    query = {"text": "", "image_b64": images, "k": 10, "explain": False}
    out: dict[str, list[float]] = {c: [] for c in CASES}
    with httpx.Client(base_url=url, timeout=300) as c:
        _timed(c, "/add_items", {"items": _items("warm", 2)})  # warm-up: connections, first batches
        _timed(c, "/recommend_by_query", query)
        for r in range(repeats):
            out["add_items_32_text"].append(_timed(c, "/add_items", {"items": _items(f"{time.monotonic_ns()}-{r}")}))
            out["query_4_images"].append(_timed(c, "/recommend_by_query", query))
    return out


def run_source(source: Path, artifacts: Path, work: Path, repeats: int) -> dict:
    state = work / f"state-{time.monotonic_ns()}"
    srv = Served(serve_env(artifacts, state), state, source)
    try:
        ready = srv.start()
        return {"server_ready_s": round(ready, 1), **measure(srv.url, repeats)}
    finally:
        srv.stop()


def _med(runs: list[dict], case: str) -> float:
    return round(statistics.median(x for r in runs for x in r[case]), 1)


def markdown(res: dict) -> str:
    lines = ["## Encoder batching over HTTP (issue 10)", "",
             f"`{res['command']}` on {res['machine']}, {res['date']}; load average (1/5/15 min) before "
             f"{res['load_before']}, after {res['load_after']}. {res['rounds']} round(s) per tree, served "
             f"alternately, {res['repeats']} timed calls per case per round after one warm-up; medians in ms.",
             ""]
    if "baseline" in res["medians"]:
        lines += ["| case | before (" + (res.get("baseline_commit") or "baseline") + ") | after | after / before |",
                  "|---|---:|---:|---:|"]
        for case in CASES:
            b, a = res["medians"]["baseline"][case], res["medians"]["current"][case]
            lines.append(f"| {case} | {b} | {a} | {a / b:.2f} |")
    else:
        lines += ["| case | ms |", "|---|---:|"]
        lines += [f"| {case} | {res['medians']['current'][case]} |" for case in CASES]
    lines += ["", "add_items: before, one text-encoder call per item, awaited one after another; after, one call "
              "per modality for the whole request (services/encoder_client.py). recommend_by_query with 4 images "
              "was already one image call per request on main (and one per modality, concurrently); after, the "
              "same path through the shared client, so its ratio is the machine's noise more than a change: see "
              "the per-round medians below. Taken on a shared 2-core machine under load (other sessions' tests "
              "running): read the ratios, not the absolute times.", ""]
    lines += ["| tree | round | add_items_32_text | query_4_images |", "|---|---:|---:|---:|"]
    for name, runs in res["runs"].items():
        for i, r in enumerate(runs, 1):
            lines.append(f"| {name} | {i} | {statistics.median(r['add_items_32_text']):.0f} | "
                         f"{statistics.median(r['query_4_images']):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-src", type=Path, help="a checkout of the code before (e.g. a worktree of main)")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/api-batching-demo"))
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print the results only")
    ap.add_argument("--rewrite", action="store_true", help="rewrite the BENCHMARKS.md section from the saved results")
    args = ap.parse_args(argv)

    if args.rewrite:
        write_section(BENCHMARKS, markdown(json.loads(RESULTS.read_text())), START, END)
        return 0
    load_before = [round(x, 2) for x in os.getloadavg()]
    artifacts = ensure_demo(args.data_dir, args.items, args.users)
    sources = ([("baseline", args.baseline_src.resolve())] if args.baseline_src else []) + [("current", ROOT)]
    runs: dict[str, list[dict]] = {name: [] for name, _ in sources}
    with tempfile.TemporaryDirectory(prefix="api-batching-") as work:
        for _ in range(args.rounds):
            for name, source in sources:
                runs[name].append(run_source(source, artifacts, Path(work), args.repeats))
                print(name, {c: round(statistics.median(runs[name][-1][c]), 1) for c in CASES}, flush=True)
    res = {"command": "python bench/api_batching.py" + (f" --baseline-src {args.baseline_src}" if args.baseline_src
                                                         else ""),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                              time.gmtime()),
           "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
           "rounds": args.rounds, "repeats": args.repeats, "runs": runs,
           "medians": {name: {c: _med(r, c) for c in CASES} for name, r in runs.items()}}
    if args.baseline_src:
        rev = subprocess.run(["git", "-C", str(args.baseline_src), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True)
        res["baseline_commit"] = rev.stdout.strip() or None
    print(json.dumps(res["medians"], indent=1))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1))
        write_section(BENCHMARKS, markdown(res), START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
