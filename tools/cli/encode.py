"""``mixrec encode``: catalog directory -> ItemEmbeddings npz, with a summary table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def encode_command(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (default: $MIXREC_CONFIG or configs/offline.yaml)"),
    catalog_dir: Path = typer.Option(..., "--catalog-dir", help="Directory holding items.jsonl and media/"),
    out: Path = typer.Option(..., "--out", help="Where to write the embeddings (.npz)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    engine: str = typer.Option("local", "--engine", help="local: this process; ray: a Ray Data actor pool "
                               "(pip install 'mixrec[ray]'; pool size, batch size, GPU share from encode.ray)"),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster to use (ray://head:10001, auto); "
                                    "default: a local Ray runtime"),
) -> None:
    """Encode every item's text, image, audio and video into native-space embeddings."""
    from encoders.errors import EncoderError
    from mixrec.config import ConfigError, load_config
    from encoders.encode_catalog import encode_catalog

    console = Console()
    if engine not in ("local", "ray"):
        console.print(f"[red]error:[/red] --engine must be local or ray, got {engine!r}")
        raise typer.Exit(2)
    try:
        cfg = load_config(config)
        if engine == "ray":
            from encoders.encode_ray import encode_catalog_ray

            emb, stats = encode_catalog_ray(cfg, catalog_dir, progress=progress, address=ray_address)
        else:
            emb, stats = encode_catalog(cfg, catalog_dir, progress=progress)
    except (ConfigError, EncoderError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    except ImportError as e:
        console.print(f"[red]error:[/red] --engine ray needs Ray Data: pip install 'mixrec[ray]' ({e})")
        raise typer.Exit(2) from None
    emb.save(out)
    if engine == "ray":
        console.print(f"{stats['items']} items encoded on Ray ({stats['actors']} actors, {stats['gpus_per_actor']} "
                      f"GPU each) in {stats['seconds']:.1f} s ({stats['items_per_s']:.1f} items/s) -> {out}; "
                      + ", ".join(f"{m}: {stats[m]['count']} x {stats[m]['dim']}" for m in ("text", "image", "audio")))
        for bad in stats["skipped"]:
            console.print(f"[yellow]skipped[/yellow] {bad['modality']} of {bad['item_id']}: {bad['reason']}")
        return
    table = Table(title=f"{stats['items']} items encoded -> {out}")
    for col in ("modality", "items", "dim", "seconds", "items/s", "encoder", "trained"):
        table.add_column(col, justify="right" if col in ("items", "dim", "seconds", "items/s") else "left")
    for m in ("text", "image", "audio", "video"):
        s = stats[m]
        d = emb.encoders.get(m if m != "video" else "image", {})
        name = f"{d.get('kind')}:{d.get('model')}" + (f" x{emb.encoders['video']['keyframes']} frames" if m == "video" else "")
        table.add_row(m, str(s["count"]), str(s["dim"]), f"{s['seconds']:.2f}", f"{s['items_per_s']:.1f}",
                      name, str(d.get("trained")))
    console.print(table)
    for bad in stats["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {bad['modality']} of {bad['item_id']}: {bad['reason']}")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode_command)
