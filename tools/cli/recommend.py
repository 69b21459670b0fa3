"""``mixrec recommend``: top-k for a known user or a text query (+ liked items), with explanations."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _encode_text(config: Path | None, text: str):
    from encoders.registry import build_encoder
    from mixrec.config import load_config

    cfg = load_config(config)
    return build_encoder(cfg.encoders.text, cfg.limits).encode([text])[0]


def recommend_command(
    artifacts: str = typer.Option(..., "--artifacts", help="Artifacts directory, or bentoml:<tag> in the model store"),
    user: str = typer.Option(None, "--user", help="A known user id"),
    query: str = typer.Option(None, "--query", help="Describe what you like (encoded with the config's text encoder)"),
    liked: str = typer.Option(None, "--liked", help="Comma-separated ids of items you liked"),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000),
    config: Path = typer.Option(None, "--config", "-c", help="Config whose text encoder encodes --query"),
) -> None:
    """Print recommendations with why each was chosen, and the user's interest distribution."""
    from fusion.artifacts import ArtifactError
    from fusion.hybrid import HybridModel, UnknownItemError, UnknownUserError
    from fusion.query import Query
    from fusion.shared_space import IncompatibleEmbeddingsError

    console = Console()
    if (user is None) == (query is None and liked is None):
        console.print("[red]error:[/red] give either --user, or --query and/or --liked")
        raise typer.Exit(2)
    try:
        model = (HybridModel.load_from_model_store(artifacts[len("bentoml:"):]) if artifacts.startswith("bentoml:")
                 else HybridModel.load(artifacts))
        if user is not None:
            recs, who = model.recommend(user, k), user
        else:
            liked_ids = tuple(i.strip() for i in (liked or "").split(",") if i.strip())
            text_vec = _encode_text(config, query) if query else None
            who = Query(text_vec=text_vec, liked_item_ids=liked_ids)
            recs = model.recommend_for_query(who, k)
        interests = model.user_interests(who, top=5)
    except (ArtifactError, IncompatibleEmbeddingsError, UnknownUserError, UnknownItemError, ValueError,
            FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    titles = {it.item_id: it.title for it in model.items}
    table = Table(title=f"top {len(recs)} for " + (f"user {user}" if user else "your query"))
    for col in ("#", "item", "type", "title", "score", "interest", "modality", "because you liked"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for n, r in enumerate(recs, 1):
        e = r.explanation
        interest = next((i["label"] for i in e.get("interests", [])), "-")
        liked_txt = next((titles.get(b["item_id"], b["item_id"]) for b in e.get("because_you_liked", [])), "-")
        table.add_row(str(n), r.item_id, r.type, titles.get(r.item_id, ""), f"{r.score:.3f}", interest,
                      str(e.get("modality") or "-"), liked_txt)
    console.print(table)
    dist = Table(title="interest distribution (top 5)")
    dist.add_column("cluster", justify="right")
    dist.add_column("label")
    dist.add_column("share", justify="right")
    for c, label, p in interests:
        dist.add_row(str(c), label, f"{p:.1%}")
    console.print(dist)


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend_command)
