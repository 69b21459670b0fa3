"""``mixrec demo-data``: write the generated demo catalog to a directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def demo_data(
    out: Path = typer.Option(Path("data/demo"), "--out", help="Catalog directory to write."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    items: int = typer.Option(300, "--items", help="Number of items (products, videos, audio); at least 24."),
    users: int = typer.Option(400, "--users", min=1, help="Number of synthetic users."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a catalog already in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate the deterministic demo catalog: items, media, users with hidden tastes, interactions."""
    from tools.demo.catalog import generate_demo_catalog

    try:
        summary = generate_demo_catalog(out, seed=seed, n_items=items, n_users=users,
                                        progress=progress, overwrite=overwrite)
    except FileExistsError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from exc
    except ValueError as exc:  # sizes too small to hold every category and type
        raise typer.BadParameter(str(exc)) from exc

    table = Table(title=f"Demo catalog in {summary.out_dir} (seed {summary.seed})")
    table.add_column("what")
    table.add_column("count", justify="right")
    for item_type, n in summary.items_per_type.items():
        table.add_row(f"{item_type} items", str(n))
    for modality, n in summary.items_with_modality.items():
        table.add_row(f"items with {modality}", str(n))
    for category, n in summary.items_per_category.items():
        table.add_row(f"category {category}", str(n))
    table.add_row("users", str(summary.n_users))
    table.add_row("interactions", str(summary.n_interactions))
    for event, n in summary.interactions_per_event.items():
        table.add_row(f"  {event}", str(n))
    table.add_row("density", f"{summary.density:.2%}")
    table.add_row("media files", f"{summary.media_files} ({summary.media_bytes / 1e6:.1f} MB)")
    table.add_row("seconds", f"{summary.seconds:.1f}")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)
