"""New users' mean-of-liked fold-in (LightFM's standard way to score a user known only by a few
liked items) on ml-100k's cold-user protocol, by how the item feature rows share their L1 mass.

Same split, same LightFM budget (64 components, 20 epochs, warp), four models:

* ``lightfm-genres``: tools/evaluation/baselines.py (identity + genres, L1 over every feature);
* mixrec's "ids + tags" candidate with ``per_feature`` off: identity and tags, each group half the
  row (what fusion/calibration.py's ``IDS_TAGS`` was before 2026-12-03);
* the same with ``per_feature`` on: identity and tags, one unit per feature (``IDS_TAGS`` now);
* mixrec's shipped defaults.

Each line: NDCG@10 and AUC of scoring every item with the mean LightFM representation of the user's
5 earliest liked items (the query text is not used). One run; LightFM's two Hogwild threads make
each figure move by ~0.01 between runs.

    .venv/bin/python bench/cold_user_foldin.py [--split ua] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="ua")
    p.add_argument("--seed", type=int, default=0, help="cold-user draw (bench/movielens.py: seed + split position)")
    p.add_argument("--data-dir", help="ml-100k directory (default: $MIXREC_MOVIELENS_DIR or ../shared/data/ml-100k)")
    args = p.parse_args()

    from bench.ml100k_text import movielens_with_text
    from fusion.features import FeatureWeights
    from tools.datasets.movielens import load_official_split
    from tools.evaluation.adapter import MixrecEvalModel
    from tools.evaluation.baselines import LightFMGenres, LightFMParams, _mean_rows
    from tools.evaluation.metrics import item_popularity
    from tools.evaluation.protocols import _Accumulator
    from tools.evaluation.splits import protocol_splits

    cfg, data = movielens_with_text(args.data_dir)
    cold = protocol_splits(data, data.extra["interactions"], warm=load_official_split(data, args.split),
                           cold_item_share=0.2, cold_user_share=0.2, n_known=5, seed=args.seed).cold_users
    liked = [q.liked_items for q in cold.queries]

    def figures(bias: np.ndarray, vecs: np.ndarray) -> str:
        acc = _Accumulator(10)
        acc.add(_mean_rows(vecs, liked) @ vecs.T + bias[None, :], cold.test, cold.known, None)
        s = acc.summary(np.ones(data.n_items, bool), item_popularity(cold.train))
        return f"NDCG@10 {s['ndcg_at_10']:.4f}  AUC {s['auc']:.4f}"

    base = LightFMGenres(LightFMParams(no_components=64, epochs=20))
    base.fit(data, cold.train)
    print(f"split {args.split}, {len(liked)} cold users, mean-of-liked fold-in")
    print(f"  {'lightfm-genres (baseline)':44s} {figures(base._item_bias, base._item_vecs)}")
    ids_tags = dict(identity=1.0, clusters=0.0, tags=1.0, category=0.0, item_type=0.0)
    for label, weights in (("mixrec ids + tags, group shares (before)", FeatureWeights(**ids_tags)),
                           ("mixrec ids + tags, per feature (IDS_TAGS now)", FeatureWeights(**ids_tags, per_feature=True)),
                           ("mixrec shipped defaults", FeatureWeights())):
        m = MixrecEvalModel(cfg, weights=weights)
        m.fit(data, cold.train)
        snap = m.model.snapshot
        print(f"  {label:44s} {figures(snap.item_bias[m._columns], snap.item_repr[m._columns])}")


if __name__ == "__main__":
    main()
