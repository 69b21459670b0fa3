"""Cost of training-time calibration on ml-100k ua: one plain LightFM fit (twice), mixrec with
calibration off, and with ``--calibrate MODE`` (profiled with cProfile, which adds some overhead).

    flock /work/heavy.lock .venv/bin/python bench/calibration_cost.py fast
"""
import os, sys, time, cProfile, pstats
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path
import numpy as np
from mixrec.config import load_config
from mixrec.embeddings import ItemEmbeddings
from mixrec.catalog import Interaction
from tools.datasets.movielens import load_movielens, load_official_split
from tools.datasets.embed import encode_items
cfg = load_config(None)
cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"no_components": 64, "epochs": 20})})
data = load_movielens()
cache = Path(os.environ.get("MIXREC_CACHE", Path.home() / ".cache" / "mixrec")) / "ml100k_text_emb.npz"
cache.parent.mkdir(parents=True, exist_ok=True)
if cache.exists():
    data.embeddings = ItemEmbeddings.load(cache)
else:
    data.embeddings = encode_items(data, cfg, progress=False); data.embeddings.save(cache)
split = load_official_split(data, "ua")
from tools.evaluation.adapter import _timestamps
import scipy.sparse as sp
coo = sp.coo_matrix(split.train)
ts = _timestamps(data, coo.row, coo.col)
inter = [Interaction(data.user_ids[u], data.item_ids[i], "like", 1.0, float(t)) for u, i, t in zip(coo.row, coo.col, ts)]
from fusion.calibration import train_model
from tools.evaluation.baselines import LightFMIds
from tools.evaluation.baselines import LightFMParams
mode = sys.argv[1] if len(sys.argv) > 1 else "fast"
t = time.perf_counter(); b = LightFMIds(LightFMParams(no_components=64, epochs=20)); b.fit(data, split.train); plain = time.perf_counter() - t
t = time.perf_counter(); m, r = train_model(data.items, data.embeddings, inter, cfg, calibrate="off"); off = time.perf_counter() - t
pr = cProfile.Profile(); pr.enable()
t = time.perf_counter(); m, r = train_model(data.items, data.embeddings, inter, cfg, calibrate=mode); cal = time.perf_counter() - t
pr.disable()
t = time.perf_counter(); b.fit(data, split.train); plain2 = time.perf_counter() - t
print(f"plain {plain:.2f}/{plain2:.2f}  off {off:.2f}  {mode} {cal:.2f}  ratio {cal/((plain+plain2)/2):.2f}  chosen {r.chosen} {r.epochs} refit {r.refit_seconds:.2f}")
for c in r.candidates: print(c.name, round(c.fit_seconds,2), round(c.score,4), [(cp.epochs, round(cp.warm,4), round(cp.cold_items,4), round(cp.cold_users,4), cp.blend) for cp in c.checkpoints])
print(r.blend, r.figures)
pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
