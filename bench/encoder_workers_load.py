"""The 32-client mixed load (bench/robustness.py ``load``) with ``serving.text_encoder.workers`` 1 and 2,
alternating on fresh state, same code: req/s, p50/p99 per API, and the TextEncoder processes' RSS.

    .venv/bin/python bench/encoder_workers_load.py [--rounds 2] [--duration 60] [--out /tmp/encw-load.json]

The demo artifacts come from ``--data-dir`` (built there by ``mixrec demo --no-serve`` when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import robustness as rb  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/tail-demo"))
    p.add_argument("--work", type=Path, default=Path("/tmp/encw-load"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("/tmp/encw-load.json"))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    artifacts = rb.ensure_demo(args.data_dir, 120, 150)
    ids = rb.demo_ids(args.data_dir)
    out = {"load_before": os.getloadavg(), "runs": []}
    for r in range(args.rounds):
        for workers in ("1", "2"):
            os.environ["MIXREC__SERVING__TEXT_ENCODER__WORKERS"] = workers  # the served config reads the env
            state = args.work / f"w{workers}-{r}"
            srv = rb.Served(rb.serve_env(artifacts, state), state, source=rb.ROOT)
            try:
                srv.start()
                for _ in range(20):  # warm caches so neither side pays them in the window
                    rb.normal_request_ok(srv.url, ids["users"][0])
                encoders = [q for q in srv.processes() if "TextEncoder" in " ".join(q.cmdline())]
                rss = round(sum(q.memory_info().rss for q in encoders) / 2 ** 20, 1)
                res = rb.load(srv, ids, args.duration, args.clients)
            finally:
                srv.stop()
            res.update(workers=int(workers), round=r, text_encoder_processes=len(encoders), text_encoder_rss_mb=rss)
            out["runs"].append(res)
            print(json.dumps({k: res[k] for k in ("workers", "round", "throughput_rps", "p50_ms", "p99_ms", "errors",
                                                  "text_encoder_processes", "text_encoder_rss_mb")}), flush=True)
    out["load_after"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
