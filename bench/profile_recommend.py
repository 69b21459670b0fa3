"""Where a known user's ``recommend`` spends its time at a catalogue size: cProfile over N calls.

Artifacts from ``bench/serving.py --phases build --work WORK``; ANN indexes built (or loaded) in STORE.

    .venv/bin/python bench/profile_recommend.py [--size 1000000] [--work /tmp/hann-bench] [--store /tmp/hann-store] [--calls 200]
"""
import argparse, cProfile, pstats, sys, tempfile, time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--size", type=int, default=1_000_000)
ap.add_argument("--work", type=Path, default=Path("/tmp/hann-bench"))
ap.add_argument("--store", type=Path, default=Path("/tmp/hann-store"))
ap.add_argument("--calls", type=int, default=200)
args = ap.parse_args()
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.serving import _engine_for, artifacts_dir
from services.candidates import AnnCandidates
from services.engine import Options
tmp = Path(tempfile.mkdtemp())
engine = _engine_for(artifacts_dir(args.work, args.size), ann_threshold=10 ** 12, tmp=tmp)
snap = engine.model.snapshot
store = args.store
engine.ann = AnnCandidates(1, store); engine.pipeline.ann = engine.ann
t = time.time(); engine.ann.refresh(snap, wait=True); print("ann ready", round(time.time() - t, 1), engine.ann.describe().get("loads"))
rng = np.random.default_rng(0)
users = [snap.user_ids[i] for i in rng.integers(0, len(snap.user_ids), args.calls)]
opts = Options(k=10, mix="interleave", explain=True)
for u in users[:10]: engine.recommend(u, opts)
ms = []
pr = cProfile.Profile(); pr.enable()
for u in users:
    t = time.perf_counter(); engine.recommend(u, opts); ms.append((time.perf_counter() - t) * 1000)
pr.disable()
print("p50", np.percentile(ms, 50), "p99", np.percentile(ms, 99))
pstats.Stats(pr).sort_stats("cumulative").print_stats(35)
