"""Iterate on the fusion model on MovieLens 100K: mixrec vs plain LightFM on warm / cold-item / cold-user.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_fusion.py [--protocols warm,cold_items,cold_users]
        [--calibrate] [--weights identity=1,clusters=0.5,...] [--fusion codebook_size=64,...]

MiniLM text embeddings of the movies are cached outside the repository
(``--cache``, default ~/.cache/mixrec); the data is read in place (never copied).
``--calibrate`` tunes the cold-user blend on validation users carved from the
*training* users of the cold-user split (never its test users) and prints the weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mixrec.config import load_config  # noqa: E402
from tools.datasets.movielens import load_movielens, load_official_split  # noqa: E402
from mixrec.embeddings import ItemEmbeddings  # noqa: E402
from tools.evaluation.baselines import LightFMIds, LightFMParams, Popularity  # noqa: E402
from tools.evaluation.protocols import run_protocols  # noqa: E402
from tools.evaluation.splits import cold_item_split, cold_user_split, liked_items_text  # noqa: E402
from tools.evaluation.adapter import MixrecEvalModel  # noqa: E402
from fusion.features import FeatureWeights  # noqa: E402
from fusion.query import QueryBlend, calibrate_blend  # noqa: E402


def text_embeddings(cfg, data, cache: Path) -> ItemEmbeddings:
    path = cache / "ml100k_text_minilm.npz"
    if path.exists():
        emb = ItemEmbeddings.load(path)
        if emb.item_ids == data.item_ids:
            return emb
    from encoders.registry import build_encoder

    enc = build_encoder(cfg.encoders.text, cfg.limits)
    vecs = enc.encode([it.text() for it in data.items])
    emb = ItemEmbeddings(list(data.item_ids), {"text": vecs}, {"text": np.ones(len(vecs), bool)},
                         {"text": enc.describe()})
    cache.mkdir(parents=True, exist_ok=True)
    emb.save(path)
    return emb


def parse_kv(s: str | None) -> dict[str, float]:
    if not s:
        return {}
    out = {}
    for k, v in (p.split("=") for p in s.split(",")):
        out[k] = v.lower() == "true" if v.lower() in ("true", "false") else float(v)
    return out


def calibrate(cfg, data, split, weights, text_encoder, seed: int = 1) -> QueryBlend:
    """Carve validation users out of the split's TRAIN users, fit, and tune the blend on them."""
    full = data.extra["interactions"]  # with timestamps, so "earliest 5" means the same as in the test
    keep = ~np.isin(full.users, split.cold_users)
    query_text = liked_items_text(data) if text_encoder is not None else None
    inner = cold_user_split(full.select(keep), share=0.25, n_known=5, seed=seed, query_text=query_text)
    model = MixrecEvalModel(cfg, weights=weights, text_encoder=text_encoder)
    model.fit(data, inner.train)
    comps, targets, excl = [], [], []
    for r, q in enumerate(inner.queries):
        comps.append(model.model.query_components(model.to_query(q)))
        targets.append(inner.test[r].indices)
        excl.append(inner.known[r].indices)
    blend, val = calibrate_blend(comps, targets, excl, k=10)
    print(f"calibrated blend on {len(targets)} validation users: NDCG@10={val:.4f} {blend}")
    return blend


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/offline.yaml")
    ap.add_argument("--protocols", default="warm,cold_items,cold_users")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "mixrec"))
    ap.add_argument("--weights", default=None, help="FeatureWeights overrides, k=v,...")
    ap.add_argument("--fusion", default=None, help="FusionConfig overrides, k=v,...")
    ap.add_argument("--model", default=None, help="ModelConfig overrides, k=v,...")
    ap.add_argument("--blend", default=None, help="QueryBlend overrides, k=v,...")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--no-query-text", action="store_true", help="cold users: liked items only, no query text")
    args = ap.parse_args()

    cfg = load_config(args.config)
    fusion = {k: (int(v) if k in ("shared_dim", "codebook_size", "soft_top", "seed") else v)
              for k, v in parse_kv(args.fusion).items()}
    model_over = {k: (int(v) if k in ("no_components", "epochs", "max_sampled", "num_threads", "seed") else v)
                  for k, v in parse_kv(args.model).items()}
    cfg = cfg.model_copy(update={"fusion": cfg.fusion.model_copy(update=fusion),
                                 "model": cfg.model.model_copy(update={"no_components": 64, "epochs": 20,
                                                                       **model_over})})
    weights = FeatureWeights(**parse_kv(args.weights))
    data = load_movielens()
    data.embeddings = text_embeddings(cfg, data, Path(args.cache))
    log = data.extra["interactions"]
    protocols = set(args.protocols.split(","))
    warm = load_official_split(data, "ua") if "warm" in protocols else None
    cold_items = cold_item_split(log, share=0.2, seed=0) if "cold_items" in protocols else None
    text_encoder = None
    if not args.no_query_text and "cold_users" in protocols:
        from tools.datasets.embed import build_text_encoder

        text_encoder = build_text_encoder(cfg).encode
    query_text = liked_items_text(data) if text_encoder is not None else None
    cold_users = (cold_user_split(log, share=0.2, n_known=5, seed=0, query_text=query_text)
                  if "cold_users" in protocols else None)
    blend = QueryBlend(**parse_kv(args.blend))
    if args.calibrate and cold_users is not None:
        blend = calibrate(cfg, data, cold_users, weights, text_encoder)
    models = [MixrecEvalModel(cfg, weights=weights, blend=blend, text_encoder=text_encoder)]
    if not args.no_baselines:
        models = [Popularity(), LightFMIds(LightFMParams(num_threads=cfg.model.num_threads))] + models
    t0 = time.time()
    res = run_protocols(models, data, warm, cold_items, cold_users, progress=False)
    print(f"config: weights={weights} fusion={cfg.fusion} model={cfg.model} blend={blend}")
    for proto, by_model in res.items():
        for name, m in by_model.items():
            print(f"{proto:15s} {name:12s} P@10={m.get('precision_at_10', float('nan')):.4f} "
                  f"NDCG@10={m.get('ndcg_at_10', float('nan')):.4f} AUC={m.get('auc', float('nan')):.4f} "
                  f"fit={m.get('fit_seconds', 0):.1f}s")
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
