"""A restarted replica: load the model and its persisted ANN indexes; seconds, RSS and peak RSS.

Artifacts from ``bench/serving.py --phases build --work WORK``; the indexes from an earlier
``AnnCandidates`` over the same snapshot persisted in STORE (``bench/profile_recommend.py`` writes them).

    .venv/bin/python bench/replica_restart.py [--size 1000000] [--work /tmp/hann-bench] [--store /tmp/hann-store]
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--size", type=int, default=1_000_000)
ap.add_argument("--work", type=Path, default=Path("/tmp/hann-bench"))
ap.add_argument("--store", type=Path, default=Path("/tmp/hann-store"))
args = ap.parse_args()
t0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.serving import _engine_for, artifacts_dir, vm_hwm_mb, vm_rss_mb
from services.candidates import AnnCandidates
t_import = time.perf_counter() - t0
rss0 = vm_rss_mb()
t1 = time.perf_counter()
engine = _engine_for(artifacts_dir(args.work, args.size), ann_threshold=10 ** 12, tmp=Path(tempfile.mkdtemp()))
t_model = time.perf_counter() - t1
rss_model = vm_rss_mb()
t2 = time.perf_counter()
engine.ann = AnnCandidates(1, args.store); engine.pipeline.ann = engine.ann
engine.ann.refresh(engine.model.snapshot, wait=True)
t_ann = time.perf_counter() - t2
d = engine.ann.describe()
assert d["loads"] == 1 and d["builds"] == 0, d
print(json.dumps({"import_s": round(t_import, 2), "rss_after_imports_mb": round(rss0, 1), "model_load_s": round(t_model, 2),
                  "rss_after_model_mb": round(rss_model, 1), "ann_load_s": round(t_ann, 2), "rss_ready_mb": round(vm_rss_mb(), 1),
                  "peak_rss_mb": round(vm_hwm_mb(), 1), "load_avg": os.getloadavg()}))
