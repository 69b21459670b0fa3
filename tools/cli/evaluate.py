"""``mixrec evaluate``: compare models on warm / cold-item / cold-user protocols (table, JSON, markdown, PNG)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class Dataset(str, Enum):
    demo = "demo"
    movielens = "movielens"


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def evaluate_command(
    dataset: Dataset = typer.Option(Dataset.demo, "--dataset", help="demo (a catalog directory) or movielens (ml-100k)"),
    catalog_dir: Path = typer.Option(None, "--catalog-dir", help="Catalog directory for --dataset demo (default: data_dir of the config)"),
    data_dir: Path = typer.Option(None, "--data-dir", help="ml-100k directory (default: $MIXREC_MOVIELENS_DIR or ../shared/data/ml-100k)"),
    posters_dir: Path = typer.Option(None, "--posters-dir", help="ml-100k posters (default: $MIXREC_POSTERS_DIR or ../shared/data/ml-100k-posters/posters)"),
    posters: bool = typer.Option(False, "--posters/--no-posters", help="MovieLens: also encode posters with the configured image encoder"),
    models: str = typer.Option("popularity,lightfm,lightfm-tags,mixrec-defaults,mixrec", "--models", help="Comma-separated: popularity, lightfm, lightfm-tags, mixrec-defaults (the shipped settings), mixrec (self-calibrated, see --calibrate)"),
    protocols: str = typer.Option("warm,cold_items,cold_users", "--protocols", help="Comma-separated: warm (known users, all items), cold_items (items trained without and added afterwards through add_items, ranked among the held-out items; also reports cold_items_all: the same cold items ranked over the whole catalogue), cold_users (users known only by their earliest --known items, + a text listing them)"),
    calibrate: str = typer.Option("fast", "--calibrate", help="Calibration budget of the mixrec model: off, fast, full (mixrec-defaults is always off)"),
    split: str = typer.Option("ua", "--split", help="MovieLens: the official warm split (ua, ub, u1..u5)"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config for mixrec and the encoders (default: $MIXREC_CONFIG or configs/offline.yaml)"),
    epochs: int = typer.Option(20, "--epochs", min=1),
    components: int = typer.Option(None, "--components", min=1, help="LightFM dimensions of the baselines (default: model.no_components of the config, as the served model: 48 in configs/offline.yaml)"),
    loss: str = typer.Option("warp", "--loss"),
    threads: int = typer.Option(2, "--threads", min=1),
    seed: int = typer.Option(0, "--seed"),
    k: int = typer.Option(10, "--k", min=1),
    cold_item_share: float = typer.Option(0.2, "--cold-item-share", min=0.01, max=0.99),
    cold_user_share: float = typer.Option(0.2, "--cold-user-share", min=0.01, max=0.99),
    known: int = typer.Option(5, "--known", min=1, help="Cold users: earliest interactions they tell us"),
    out: Path = typer.Option(None, "--out", help="Directory for evaluation.json / .md / .png (default: <data_dir of the config>/eval-results, never the repository)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Evaluate recommenders: P@k, R@k, NDCG@k, AUC, coverage, novelty on warm and cold-start splits."""
    from mixrec.config import ConfigError, load_config
    from tools.datasets.embed import build_text_encoder, encode_items
    from tools.evaluation.baselines import LightFMParams
    from tools.evaluation.bootstrap import compare_to_best, comparison_markdown, comparison_table
    from tools.evaluation.protocols import build_models, run_protocols
    from tools.evaluation.report import report_console, rich_table, write_report
    from tools.evaluation.splits import protocol_splits

    console = report_console()
    names = _split_list(models)
    wanted = tuple(_split_list(protocols))
    try:
        cfg = load_config(config)
        # One default: the served model's dimensions (the config's), not a second number here.
        params = LightFMParams(no_components=components or cfg.model.no_components, epochs=epochs, loss=loss,
                               num_threads=threads, seed=seed)
        out = out or Path(cfg.data_dir) / "eval-results"
        text_encoder = build_text_encoder(cfg) if "mixrec" in names else None
        if dataset is Dataset.movielens:
            from tools.datasets.movielens import load_movielens, load_official_split

            data = load_movielens(data_dir, posters_dir)
            warm = load_official_split(data, split) if "warm" in wanted else None
            if "mixrec" in names:
                data.embeddings = encode_items(data, cfg, images=posters, progress=progress,
                                               text_encoder=text_encoder)
        else:
            from tools.datasets.catalog_dir import load_catalog_dir

            data = load_catalog_dir(catalog_dir or Path(cfg.data_dir))
            warm = None
            if "mixrec" in names and data.embeddings is None:
                from encoders.encode_catalog import encode_catalog

                console.print("no embeddings.npz in the catalog directory: encoding the catalog first")
                data.embeddings, _ = encode_catalog(cfg, data.extra["catalog_dir"], items=data.items,
                                                    progress=progress)
        splits = protocol_splits(data, data.extra["interactions"], warm=warm, protocols=wanted,
                                 cold_item_share=cold_item_share, cold_user_share=cold_user_share,
                                 n_known=known, seed=seed)
        if text_encoder is not None and data.embeddings is not None and \
                data.embeddings.encoders.get("text", {}).get("model") != cfg.encoders.text.model:
            console.print("[yellow]embeddings.npz was made with another text encoder: "
                          "cold-user query texts are not used[/yellow]")
            text_encoder = None
        if calibrate not in ("off", "fast", "full"):
            raise ValueError(f"--calibrate must be off, fast or full, got {calibrate!r}")
        built, skipped = build_models(names, params, cfg, text_encoder.encode if text_encoder else None, calibrate)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    for name, why in skipped.items():
        console.print(f"[yellow]skipping {name}:[/yellow] {why}")
    if not built:
        console.print("[red]error:[/red] no model to evaluate")
        raise typer.Exit(2)

    results = run_protocols(built, data, splits.warm, splits.cold_items, splits.cold_users, k=k,
                            progress=progress, fail_fast=False)
    title = f"{dataset.value}: {data.n_users} users x {data.n_items} items"
    console.print(rich_table(results, k, title=title))
    comparison = compare_to_best(results, "mixrec")
    if comparison:
        console.print(comparison_table(comparison, "mixrec (calibrated) - best baseline, 95% CI over users"))
    calibration = {m.name: m.report.as_dict() for m in built if getattr(m, "report", None) is not None}
    meta = {"dataset": dataset.value, "k": k, "lightfm": vars(params), "seed": seed, "skipped_models": skipped,
            "cold_item_share": cold_item_share, "cold_user_share": cold_user_share, "known_items": known,
            "calibrate": calibrate, "split": split if dataset is Dataset.movielens else None,
            "comparison": comparison, "calibration_last_fit": calibration}
    paths = write_report(results, out, "evaluation", k=k, title=title, meta=meta)
    if comparison:
        paths["md"].write_text(paths["md"].read_text() + "\n## mixrec (calibrated) - best baseline\n\n"
                               + comparison_markdown(comparison) + "\n")
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
