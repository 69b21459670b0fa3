"""MovieLens 100K benchmark: popularity, plain LightFM, LightFM + genres and mixrec, side by side.

One run, one budget: the ua.base / ua.test split for the warm protocol, 20% of the
items held out for cold items and 20% of the users (earliest 5 interactions known)
for cold users, all with seed 0, and the same LightFM epochs / components for
every LightFM-based model. Writes bench/results/movielens.{json,png} and the
``movielens`` section of BENCHMARKS.md (targets from the issue, met or not).

    .venv/bin/python bench/movielens.py [--posters] [--epochs 20] [--components 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # runnable as a plain script from a checkout

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


SECTION_START = "<!-- movielens:start -->"
SECTION_END = "<!-- movielens:end -->"
MODELS = ("popularity", "lightfm", "lightfm-genres", "mixrec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="ml-100k directory (default: $MIXREC_MOVIELENS_DIR or ../shared/data/ml-100k)")
    p.add_argument("--posters-dir", help="posters directory (default: $MIXREC_POSTERS_DIR or ../shared/data/ml-100k-posters/posters)")
    p.add_argument("--posters", action="store_true", help="also encode posters with the configured (offline: untrained) image encoder")
    p.add_argument("--config", help="mixrec YAML config (default: configs/offline.yaml)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--components", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"), help="directory for movielens.json / .png")
    p.add_argument("--benchmarks-md", default=str(REPO_ROOT / "BENCHMARKS.md"))
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ---------------------------------------------------------------- targets

def _get(results: dict, protocol: str, model: str, metric: str) -> float | None:
    value = results.get(protocol, {}).get(model, {}).get(metric)
    return None if value is None else float(value)


def evaluate_targets(results: dict) -> list[dict]:
    """The issue's targets for mixrec, each with the figures it was judged on (met None = not measured)."""
    def target(name: str, measured: float | None, threshold: float | None, detail: str,
               at_most: bool = False) -> dict:
        if measured is None or threshold is None:
            met = None
        else:
            met = bool(measured <= threshold) if at_most else bool(measured >= threshold)
        return {"target": name, "measured": measured, "threshold": threshold, "met": met, "detail": detail}

    mix_p, lfm_p = _get(results, "warm", "mixrec", "precision_at_10"), _get(results, "warm", "lightfm", "precision_at_10")
    mix_auc, lfm_auc = _get(results, "warm", "mixrec", "auc"), _get(results, "warm", "lightfm", "auc")
    cold_auc = _get(results, "cold_items", "mixrec", "auc")
    mix_ndcg = _get(results, "cold_users", "mixrec", "ndcg_at_10")
    pop_ndcg = _get(results, "cold_users", "popularity", "ndcg_at_10")
    mix_fit, lfm_fit = _get(results, "warm", "mixrec", "fit_seconds"), _get(results, "warm", "lightfm", "fit_seconds")
    scale = lambda v, f: None if v is None else v * f  # noqa: E731
    return [
        target("warm P@10 >= 1.03 x plain LightFM", mix_p, scale(lfm_p, 1.03), "mixrec vs lightfm, ua split"),
        target("warm AUC >= plain LightFM", mix_auc, lfm_auc, "mixrec vs lightfm, ua split"),
        target("cold items AUC >= 0.82", cold_auc, 0.82, "ranked among the held-out items"),
        target("cold users NDCG@10 >= popularity", mix_ndcg, pop_ndcg, "earliest 5 items known"),
        target("cold users NDCG@10 >= 1.10 x popularity (stretch)", mix_ndcg, scale(pop_ndcg, 1.10), ""),
        target("fit time <= 3 x plain LightFM", mix_fit, scale(lfm_fit, 3.0), "warm protocol fit, seconds",
               at_most=True),
    ]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"


def targets_markdown(targets: list[dict]) -> str:
    lines = ["| target (mixrec) | measured | threshold | met |", "|---|---:|---:|:---:|"]
    for t in targets:
        met = "not measured" if t["met"] is None else ("met" if t["met"] else "**not met**")
        lines.append(f"| {t['target']} | {_fmt(t['measured'])} | {_fmt(t['threshold'])} | {met} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- BENCHMARKS.md

def replace_section(text: str, body: str) -> str:
    """``text`` with the movielens section replaced by ``body`` (appended when the markers are absent)."""
    block = f"{SECTION_START}\n{body.rstrip()}\n{SECTION_END}"
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(SECTION_END):]
    if not text.strip():
        return f"# Benchmarks\n\n{block}\n"
    return text.rstrip() + "\n\n" + block + "\n"


def write_section(path: Path, body: str) -> None:
    # Another benchmark writes its own section of this file: re-read right before
    # writing and replace atomically, touching only our markers.
    current = path.read_text() if path.exists() else ""
    updated = replace_section(current, body)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".benchmarks-", suffix=".md") as f:
        f.write(updated)
    os.replace(f.name, path)


def section_body(results: dict, targets: list[dict], meta: dict, command: str, png: Path, md_path: Path) -> str:
    from tools.evaluation.report import markdown_table

    skipped = meta.get("skipped_models") or {}
    notes = "".join(f"\n- `{m}` not run: {why}" for m, why in skipped.items())
    rel_png = os.path.relpath(png, md_path.parent)
    return f"""## MovieLens 100K: warm, cold-item and cold-user protocols

Command (from the repository root):

```
{command}
```

Setup: warm = the official ua.base / ua.test split (every rating is a positive,
train items excluded from ranking); cold items = {meta['cold_item_share']:.0%} of the movies held out
(seed {meta['seed']}), ranked among the held-out movies (`cold_items`) and over the whole
catalog (`cold_items_all`); cold users = {meta['cold_user_share']:.0%} of the users held out (seed {meta['seed']}),
each known only by their earliest {meta['known_items']} rated movies (+ a text listing them), tested on
all later ones. LightFM budget for every LightFM-based model: {meta['lightfm']['epochs']} epochs,
{meta['lightfm']['no_components']} components, {meta['lightfm']['loss']} loss, {meta['lightfm']['num_threads']} threads.
mixrec item content: {meta['content']}. Machine: {meta['machine']}. Run on {meta['date']}.{notes}

Noise: with more than one thread LightFM trains Hogwild-style and is not bit-reproducible
(P@10 moves by about ±0.005 between runs; `--threads 1` is deterministic), and fit
seconds depend on the machine's load at the time, so read near-threshold targets with care.

{markdown_table(results, 10)}

Targets from the issue:

{targets_markdown(targets)}

![MovieLens results]({rel_png})
"""


# ---------------------------------------------------------------- run

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mixrec.config import load_config
    from tools.datasets.embed import build_text_encoder, encode_items
    from tools.datasets.movielens import load_movielens, load_official_split
    from tools.evaluation.baselines import LightFMParams
    from tools.evaluation.protocols import build_models, run_protocols
    from tools.evaluation.report import plot_results, report_console, rich_table, write_json
    from tools.evaluation.splits import protocol_splits

    console = report_console()

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    progress = not args.no_progress
    data = load_movielens(args.data_dir, args.posters_dir)
    warm = load_official_split(data, "ua")
    splits = protocol_splits(data, data.extra["interactions"], warm=warm, cold_item_share=0.2,
                             cold_user_share=0.2, n_known=5, seed=args.seed)
    params = LightFMParams(no_components=args.components, epochs=args.epochs, num_threads=args.threads,
                           seed=args.seed)
    cfg = load_config(args.config)
    text_encoder = build_text_encoder(cfg) if "mixrec" in names else None
    models, skipped = build_models(names, params, cfg, text_encoder.encode if text_encoder else None)
    content = "not used (mixrec not run)"
    if any(m.name == "mixrec" for m in models):
        start = time.perf_counter()
        data.embeddings = encode_items(data, cfg, images=args.posters, progress=progress, text_encoder=text_encoder)
        content = (f"{', '.join(sorted(data.embeddings.vectors))} embeddings "
                   f"({cfg.encoders.text.model} text" + (", offline untrained image encoder on posters" if args.posters else "")
                   + f"), encoded in {time.perf_counter() - start:.1f}s, not counted in fit time")
    for name, why in skipped.items():
        console.print(f"[yellow]skipping {name}:[/yellow] {why}")

    results = run_protocols(models, data, splits.warm, splits.cold_items, splits.cold_users, k=10,
                            progress=progress, fail_fast=False)
    console.print(rich_table(results, 10, title="MovieLens 100K"))
    targets = evaluate_targets(results)
    out = Path(args.out)
    meta = {"dataset": "ml-100k", "k": 10, "lightfm": vars(params), "seed": args.seed, "skipped_models": skipped,
            "cold_item_share": 0.2, "cold_user_share": 0.2, "known_items": 5, "content": content,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
            "positives": "every rating (1-5)", "targets": targets}
    json_path = write_json(results, out / "movielens.json", meta)
    png = plot_results(results, out / "movielens.png", 10, title="MovieLens 100K")
    command = ".venv/bin/python bench/movielens.py" + "".join(
        f" {flag} {value}" for flag, value in (("--epochs", args.epochs), ("--components", args.components),
                                               ("--threads", args.threads))) + (" --posters" if args.posters else "")
    md_path = Path(args.benchmarks_md)
    write_section(md_path, section_body(results, targets, meta, command, png, md_path))
    console.print(targets_markdown(targets))
    console.print(f"wrote {json_path}, {png}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
