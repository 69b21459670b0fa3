"""``mixrec train``: catalog + embeddings -> trained HybridModel artifacts, with a summary table."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text


class Calibrate(str, Enum):
    off = "off"
    fast = "fast"
    full = "full"


def train_command(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (default: $MIXREC_CONFIG or configs/offline.yaml)"),
    catalog_dir: Path = typer.Option(..., "--catalog-dir", help="Directory holding items.jsonl and interactions.csv"),
    embeddings: Path = typer.Option(..., "--embeddings", help="ItemEmbeddings .npz from `mixrec encode`"),
    out: Path = typer.Option(..., "--out", help="Artifacts directory to write"),
    model_store: str = typer.Option(None, "--model-store", help="Also save into the BentoML model store under this name"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    calibrate: Calibrate = typer.Option(Calibrate.fast, "--calibrate", help="Choose the fusion settings on a validation "
                                        "split of this data, then refit: off (the configured defaults), fast (the "
                                        "defaults vs LightFM ids + tags, early stopping, new-user blend, cold-item "
                                        "map; measured about 12x one plain LightFM fit on ml-100k ua, see BENCHMARKS.md), full (more candidates)"),
) -> None:
    """Fit the shared space, the interest codebook and the LightFM hybrid; save the artifacts."""
    from encoders.errors import EncoderError
    from encoders.fingerprint import check_same
    from encoders.registry import configured_fingerprints
    from fusion.calibration import train_model
    from fusion.shared_space import IncompatibleEmbeddingsError
    from mixrec.catalog import read_interactions, read_items
    from mixrec.config import DEFAULT_CONFIG, ENV_CONFIG_FILE, ConfigError, load_config
    from mixrec.embeddings import ItemEmbeddings

    console = Console()
    cfg_name = str(config or os.environ.get(ENV_CONFIG_FILE) or DEFAULT_CONFIG)
    try:
        cfg = load_config(config)
        items = read_items(catalog_dir)
        interactions = read_interactions(catalog_dir)
        emb = ItemEmbeddings.load(embeddings)
        # the model records the embeddings' encoders: they must be the ones this config serves
        check_same(emb.encoders, configured_fingerprints(cfg, [m for m in emb.vectors]),
                   have_name=f"the embeddings {embeddings}", want_name=f"the config {cfg_name}",
                   fix=f"re-encode with `mixrec encode --config {cfg_name}`, or train with the config the "
                       "embeddings were made with")
        model, report = train_model(items, emb, interactions, cfg, calibrate=calibrate.value, progress=progress)
    except (ConfigError, EncoderError, FileNotFoundError, IncompatibleEmbeddingsError, ValueError, KeyError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    model.save(out)
    ann = _write_ann_indexes(model, cfg, out)
    report.save(out)
    table = Table(title=f"trained -> {out}")
    table.add_column("what")
    table.add_column("value", justify="right")
    snap = model.snapshot
    table.add_row("ANN indexes", ann)
    table.add_row("items / users / interactions", f"{len(snap.item_ids)} / {len(snap.user_ids)} / {snap.seen.nnz}")
    table.add_row("shared space", f"{model.space.dim}-d, anchored on {model.space.anchor}")
    for adj in model.space.adjustments():
        table.add_row(f"  adjusted {adj['field']}", f"{adj['configured']} -> {adj['used']} ({adj['why']})")
    for m in model.space.modalities:
        table.add_row(f"  {m} weight (alignment R^2)", f"{model.space.weight(m):.3f}")
    table.add_row("interest clusters", str(model.codebook.size))
    table.add_row("LightFM", f"{model.model_cfg.loss}, {model.model_cfg.no_components} components, "
                             f"{model.model_cfg.epochs} epochs, {model.fit_seconds:.1f}s")
    table.add_row("features item / user", f"{len(model.item_fidx)} / {len(model.user_fidx)}")
    console.print(table)
    console.print(calibration_table(report.as_dict()))
    labels = Table(title="interest clusters (first 10)")
    labels.add_column("id", justify="right")
    labels.add_column("label")
    for c, lbl in list(enumerate(model.codebook.labels))[:10]:
        labels.add_row(str(c), lbl)
    console.print(labels)
    if model_store:
        tag = model.save_to_model_store(model_store)
        _copy_beside_model(out, tag)
        console.print(f"saved to the BentoML model store as [bold]{tag}[/bold]")


def _write_ann_indexes(model, cfg, out: Path) -> str:
    """The service's ANN indexes, built now and saved in ``out/ann`` so a replica loads them at start
    instead of building them (about a minute at 1M items); catalogues below the threshold stay exact."""
    from services.candidates import STORE_DIR, persist_indexes

    n = len(model.snapshot.item_ids)
    if n < cfg.serving.ann_threshold:
        return f"none: {n} items, exact below serving.ann_threshold {cfg.serving.ann_threshold}"
    done = persist_indexes(model.snapshot, out / STORE_DIR)
    return f"{done['items']} items in {done['build_seconds']:.1f}s -> {out / STORE_DIR}"


def _copy_beside_model(out: Path, tag: str) -> None:
    """The model store entry carries the same ``ann/`` and ``calibration.json`` as the artifacts
    directory (a Bento ships them; ``MixrecModel.load('bentoml:<tag>')`` reads the report back)."""
    import shutil

    from fusion.artifacts import model_store_path
    from fusion.calibration import REPORT_FILE
    from services.candidates import STORE_DIR

    entry = model_store_path(tag)
    if (out / STORE_DIR).is_dir():
        shutil.copytree(out / STORE_DIR, entry / STORE_DIR, ignore=shutil.ignore_patterns(".lock"),
                        dirs_exist_ok=True)
    if (out / REPORT_FILE).is_file():
        shutil.copy2(out / REPORT_FILE, entry / REPORT_FILE)


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def calibration_table(report: dict) -> Table | Group:
    """The calibration report (fusion.calibration.CalibrationReport.as_dict) as a rich table:
    each candidate's validation figures at its best epoch, the chosen one marked."""
    table = Table(title=f"calibration ({report['mode']}): chose {report['chosen']!r}, {report['epochs']} epochs, "
                        f"{report['seconds']:.1f}s in all")
    for col in ("candidate", "best epoch", "warm NDCG@10", "warm AUC", "cold items NDCG@10", "cold users NDCG@10",
                "score", "fit s"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for c in report.get("candidates", []):
        b = c.get("best") or {}
        mark = "[bold green]* [/bold green]" if c["name"] == report["chosen"] else "  "
        table.add_row(mark + c["name"], str(b.get("epochs", "-")), _num(b.get("warm")), _num(b.get("warm_auc")),
                      _num(b.get("cold_items")), _num(b.get("cold_users")), f"{c['score']:.3f}", f"{c['fit_seconds']:.1f}")
    blend = {k: v for k, v in report.get("blend", {}).items() if v and k != "content_description"}
    table.caption = (f"new-user blend {blend}; cold-item map weight {report.get('cold_map_weight')}; "
                     f"validation {report.get('validation', {})}; refit {report.get('refit_seconds', 0):.1f}s")
    if not report.get("selection"):
        return table
    # Below the table, not in its caption: a caption wraps at the table's width, this wraps at the terminal's.
    return Group(table, Text(f"why: {report['selection']}"))


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
