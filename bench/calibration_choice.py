"""What calibration saw on one ml-100k split: every candidate's validation figures at every epoch
checkpoint, and why it chose what it chose (``train_model(calibrate=MODE)`` on the split's base
file, as `bench/movielens.py`'s warm protocol trains).

    .venv/bin/python bench/calibration_choice.py [--split u1] [--mode fast]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="u1")
    p.add_argument("--mode", default="fast", choices=("fast", "full"))
    p.add_argument("--data-dir", help="ml-100k directory (default: $MIXREC_MOVIELENS_DIR or ../shared/data/ml-100k)")
    args = p.parse_args()

    from bench.ml100k_text import movielens_with_text
    from fusion.calibration import train_model
    from tools.datasets.movielens import load_official_split
    from tools.evaluation.adapter import likes_from_matrix

    cfg, data = movielens_with_text(args.data_dir)
    inter = likes_from_matrix(data, load_official_split(data, args.split).train)
    _, report = train_model(data.items, data.embeddings, inter, cfg, calibrate=args.mode)
    print(f"split {args.split}, validation {report.validation}")
    print(f"chose {report.chosen} at {report.epochs} epochs: {report.selection}")
    print(f"{'candidate':30s} {'epochs':>6s} {'warm NDCG':>10s} {'warm AUC':>9s} {'cold items':>11s} "
          f"{'new users NDCG / AUC':>21s}  blend")
    for c in report.candidates:
        for cp in c.checkpoints:
            print(f"{c.name:30s} {cp.epochs:6d} {cp.warm:10.4f} {cp.warm_auc:9.4f} {cp.cold_items:11.4f} "
                  f"{cp.cold_users:10.4f} / {cp.cold_users_auc:.4f}  {cp.blend}")


if __name__ == "__main__":
    main()
