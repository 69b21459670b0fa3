"""``mixrec models``: put local encoder weights into the BentoML model store, list them.

An imported model is referenced from config as ``weights: bentoml:<name>:<version>``
(or ``bentoml:<name>`` for the latest).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="Encoder weights in the BentoML model store", no_args_is_help=True)
KIND_LABEL = "mixrec.kind"


def import_model(src: Path, name: str, kind: str, model: str | None = None, trained: bool | None = None) -> str:
    """Copy a weights directory into the model store; returns the new tag.

    ``trained`` marks the weights as a trained model (True) or not (False); None keeps what the directory's
    mixrec marker says, and weights without one are reported as untrained (not known to be trained)."""
    import bentoml

    from encoders.errors import EncoderConfigError
    from encoders.registry import available_kinds
    from encoders.weights import read_marker, write_marker

    if not src.is_dir():
        raise EncoderConfigError(f"SRC must be a directory of weights, got {src}")
    if kind not in available_kinds():
        raise EncoderConfigError(f"unknown encoder kind {kind!r}; known kinds: {sorted(available_kinds())}")
    marker = read_marker(src)
    known = marker.get("trained") if trained is None else trained
    labels = {KIND_LABEL: kind, "mixrec.model": model or marker.get("model", name),
              "mixrec.trained": "unknown" if known is None else str(bool(known)).lower()}
    with bentoml.models.create(name, labels=labels, metadata={"source": str(src.resolve())}) as ref:
        shutil.copytree(src, ref.path, dirs_exist_ok=True)
        if known is not None:
            write_marker(Path(ref.path), kind=kind, model=labels["mixrec.model"], trained=bool(known))
    return str(ref.tag)


@models_app.command("import")
def import_command(
    src: Path = typer.Argument(..., help="Local weights directory (save_pretrained / open_clip local-dir layout)"),
    name: str = typer.Option(..., "--name", help="Model-store name"),
    kind: str = typer.Option(..., "--kind", help="Encoder kind the weights are for, e.g. hf-text"),
    model: str = typer.Option(None, "--model", help="Architecture / model name recorded as a label"),
    trained: bool = typer.Option(None, "--trained/--untrained", help="Mark the weights as a trained model or not "
                                 "(default: what a mixrec-saved directory says; unmarked weights report trained: false)"),
) -> None:
    """Import SRC into the BentoML model store."""
    from encoders.errors import EncoderConfigError

    try:
        tag = import_model(src, name, kind, model, trained)
    except EncoderConfigError as e:
        Console().print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    Console().print(f"imported [bold]{tag}[/bold]; use it as  weights: bentoml:{tag}")


@models_app.command("list")
def list_command() -> None:
    """List encoder weights in the model store (those imported with `mixrec models import`)."""
    import bentoml

    table = Table(title="BentoML model store: mixrec encoders")
    for col in ("tag", "kind", "model", "trained", "created"):
        table.add_column(col)
    for m in sorted(bentoml.models.list(), key=lambda m: str(m.tag)):
        labels = m.info.labels or {}
        if KIND_LABEL in labels:
            table.add_row(str(m.tag), labels[KIND_LABEL], labels.get("mixrec.model", ""),
                          labels.get("mixrec.trained", ""), str(m.info.creation_time)[:19])
    Console().print(table)


def info_command(
    artifacts: Path = typer.Argument(..., help="Artifacts directory written by `mixrec train --out`"),
) -> None:
    """What a trained model is: its settings and how training-time calibration chose them."""
    import json

    from fusion.calibration import CalibrationReport
    from tools.cli.train import calibration_table

    console = Console()
    if not artifacts.is_dir():
        console.print(f"[red]error:[/red] no artifacts directory at {artifacts}")
        raise typer.Exit(2)
    report = CalibrationReport.load(artifacts)
    if report is None:
        console.print(f"{artifacts}: no calibration report (trained with --calibrate off, or before calibration "
                      "existed): the configured defaults")
        return
    console.print(calibration_table(report))
    console.print(json.dumps({k: report[k] for k in ("weights", "fusion", "blend", "cold_map_weight", "epochs",
                                                      "figures")}, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("info")(info_command)
