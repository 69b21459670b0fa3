"""Cost of training-time calibration on one ml-100k split, as a multiple of one plain LightFM fit
(ids only, 64 components, 20 epochs, 2 threads): a warm-up fit, a timed plain fit, mixrec's
``train_model(calibrate=MODE)``, a second timed plain fit; ratio = calibrated / mean of the two
plain fits. Prints where the calibrated fit's time went (wall seconds per phase; the validation
runs train side by side, so their phases overlap and add up to more than the wall time).

    .venv/bin/python bench/calibration_cost.py [--split ua] [--mode fast] [--repeats 3] [--profile]

Before/after comparisons: run it from two checkouts in alternation (``--repo DIR`` imports mixrec
from DIR, e.g. a ``git worktree`` of the earlier commit), same host, same minutes.
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="ua")
    p.add_argument("--mode", default="fast", choices=("off", "fast", "full"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="also print cProfile's top 30 (adds overhead)")
    p.add_argument("--repo", default=str(REPO_ROOT), help="checkout to import mixrec from")
    p.add_argument("--data-dir", help="ml-100k directory (default: $MIXREC_MOVIELENS_DIR or ../shared/data/ml-100k)")
    args = p.parse_args()
    sys.path.insert(0, args.repo)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import scipy.sparse as sp

    import fusion.calibration as calibration
    import fusion.hybrid as hybrid
    from mixrec.catalog import Interaction
    from mixrec.config import load_config
    from tools.datasets.embed import encode_items
    from tools.datasets.movielens import load_movielens, load_official_split
    from tools.evaluation.adapter import _timestamps
    from tools.evaluation.baselines import LightFMIds, LightFMParams

    cfg = load_config(None)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"no_components": 64, "epochs": 20})})
    data = load_movielens(args.data_dir)
    data.embeddings = encode_items(data, cfg, progress=False)
    split = load_official_split(data, args.split)
    # Inline rather than tools.evaluation.adapter.likes_from_matrix: --repo may name a checkout older
    # than that helper, and this script has to run against it unchanged.
    coo = sp.coo_matrix(split.train)
    ts = _timestamps(data, coo.row, coo.col)
    inter = [Interaction(data.user_ids[u], data.item_ids[i], "like", 1.0, float(t))
             for u, i, t in zip(coo.row, coo.col, ts)]

    phases: collections.Counter = collections.Counter()

    def timed(owner, name: str, label: str) -> None:
        f = getattr(owner, name)

        @functools.wraps(f)
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                phases[label] += time.perf_counter() - t0
        setattr(owner, name, wrapper)

    for name, label in (("_score_checkpoint", "scoring checkpoints"), ("_cold_user_parts", "  of which new users' parts"),
                        ("calibrate_blend", "blend search"), ("make_holdout", "validation split")):
        timed(calibration, name, label)
    for name, label in (("_run_epochs", "LightFM epochs"), ("_fit_cold_map", "cold-item map"),
                        ("_ingest", "ingesting interactions"), ("set_scoring_knobs", "scoring knobs")):
        timed(hybrid.HybridModel, name, label)

    plain = LightFMIds(LightFMParams(no_components=64, epochs=20))
    plain.fit(data, split.train)  # warm-up: the process's first LightFM fit is not timed
    ratios = []
    for _ in range(args.repeats):
        phases.clear()
        t0 = time.perf_counter()
        plain.fit(data, split.train)
        plain1 = time.perf_counter() - t0
        profiler = None
        if args.profile:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        _, report = calibration.train_model(data.items, data.embeddings, inter, cfg, calibrate=args.mode)
        cal = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
        t0 = time.perf_counter()
        plain.fit(data, split.train)
        plain2 = time.perf_counter() - t0
        ratios.append(cal / ((plain1 + plain2) / 2))
        print(f"{args.split} {args.mode}: plain {plain1:.2f} / {plain2:.2f} s, calibrated {cal:.2f} s "
              f"(refit {report.refit_seconds:.2f} s), ratio {ratios[-1]:.2f}x; chose {report.chosen} at "
              f"{report.epochs} epochs ({report.selection})")
        for label, seconds in sorted(phases.items(), key=lambda t: -t[1]):
            print(f"    {label:30s} {seconds:6.2f} s")
        if profiler is not None:
            import pstats
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    print(f"median ratio {float(np.median(ratios)):.2f}x over {len(ratios)} run(s)")


if __name__ == "__main__":
    main()
