"""``mixrec recommend``: top-k for a known user or a query, through the service's ranking pipeline.

The ranking is services/pipeline.py's ``RankingPipeline`` — the one the Recommender runs — so the
same user and options give the same list here and from the service (mix, diversity, type and tag
filters, exclusions, ANN candidates at ``serving.ann_threshold`` items and above). What the CLI does
not have is the service's database: events sent to a running service after training are not seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _encode_text(cfg, text: str):
    from encoders.registry import build_encoder

    return build_encoder(cfg.encoders.text, cfg.limits).encode([text])[0]


def _ids(csv: str | None) -> list[str]:
    return [i.strip() for i in (csv or "").split(",") if i.strip()]


def _mix(text: str | None):
    """``score`` / ``interleave`` as they are; anything else is JSON (per-type counts or proportions)."""
    if text is None or text in ("score", "interleave"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise typer.BadParameter(f"--mix must be 'score', 'interleave' or JSON such as '{{\"product\": 5}}', "
                                 f"got {text!r}") from None


def recommend_command(
    artifacts: str = typer.Option(..., "--artifacts", help="Artifacts directory, or bentoml:<tag> in the model store"),
    user: str = typer.Option(None, "--user", help="A known user id"),
    query: str = typer.Option(None, "--query", help="Describe what you like (encoded with the config's text encoder)"),
    liked: str = typer.Option(None, "--liked", help="Comma-separated ids of items you liked"),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000),
    types: str = typer.Option(None, "--types", help="Comma-separated item types to return (product,video,audio)"),
    tags: str = typer.Option(None, "--tags", help="Comma-separated tags: only items carrying any of them"),
    mix: str = typer.Option(None, "--mix", help="'score', 'interleave', or JSON counts/proportions per type, "
                                                "e.g. '{\"product\": 3, \"video\": 2}'"),
    diversity: float = typer.Option(0.0, "--diversity", min=0.0, max=1.0, help="MMR lambda: 0 = by score only"),
    exclude: str = typer.Option(None, "--exclude", help="Comma-separated item ids never to return"),
    as_json: bool = typer.Option(False, "--json", help="Print the service's response JSON instead of tables"),
    config: Path = typer.Option(None, "--config", "-c",
                                help="Config: its text encoder encodes --query, its serving.ann_threshold picks ANN"),
) -> None:
    """Print recommendations with why each was chosen, and the user's interest distribution."""
    from fusion.artifacts import ArtifactError
    from fusion.shared_space import IncompatibleEmbeddingsError
    from mixrec.config import load_config
    from mixrec.errors import InputError, NotFoundError
    from services.pipeline import Options

    console = Console()
    if (user is None) == (query is None and liked is None):
        console.print("[red]error:[/red] give either --user, or --query and/or --liked")
        raise typer.Exit(2)
    try:  # Options validates (item types, diversity range): a bad value is an error line, not a traceback
        opts = Options(k=k, types=_ids(types) or None, tags=_ids(tags) or None, mix=_mix(mix),
                       exclude_item_ids=tuple(_ids(exclude)), diversity=diversity)
        cfg = load_config(config)
        out, model = _run(cfg, artifacts, user, query, tuple(_ids(liked)), opts)
    except (ArtifactError, IncompatibleEmbeddingsError, NotFoundError, InputError, ValueError,
            FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(out))
        return
    _print(console, out, f"user {user}" if user else "your query", model.item_title)


def _run(cfg, artifacts: str, user: str | None, query: str | None, liked: tuple[str, ...], opts):
    """(the response the service would give, in its ``recommend`` / ``recommend_by_query`` shape; the model)."""
    from fusion.query import Query
    from services.candidates import AnnCandidates
    from services.pipeline import RankingPipeline
    from services.replica import load_trained_model

    model = load_trained_model(artifacts)
    model.event_rules, model.recency_half_life_days = cfg.events, cfg.model.recency_half_life_days
    pipeline = RankingPipeline(lambda: model, AnnCandidates(cfg.serving.ann_threshold))
    if pipeline.ann.active_for(model.snapshot):
        pipeline.ann.refresh(model.snapshot, wait=True)  # a one-shot run waits for the indexes the service keeps
    if user is not None:
        model.snapshot.user_row(user)  # unknown user: NotFoundError
        items = pipeline.for_user(model.fold_in(user, []), opts)
        interests = model.user_interests(user, top=5)
        return {"user_id": user, "items": items, "interests": _interests(interests)}, model
    text_vec = _encode_text(cfg, query) if query else None
    scored = model.score_query(Query(text_vec=text_vec, liked_item_ids=tuple(dict.fromkeys(liked))))
    items = pipeline.for_query(scored, opts)
    return {"items": items, "query": {"interests": _interests(model.user_interests(scored, top=5))}}, model


def _interests(dist) -> list[dict]:
    return [{"cluster": c, "label": label, "probability": round(p, 4)} for c, label, p in dist]


def _print(console: Console, out: dict, who: str, title) -> None:
    items = out["items"]
    table = Table(title=f"top {len(items)} for {who}")
    for col in ("#", "item", "type", "title", "score", "interest", "modality", "because you liked"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for n, r in enumerate(items, 1):
        e = r.get("explanation", {})
        interest = next((i["label"] for i in e.get("interests", [])), "-")
        liked_txt = next((title(b["item_id"]) for b in e.get("because_you_liked", [])), "-")
        table.add_row(str(n), r["item_id"], r["type"], r["title"], f"{r['score']:.3f}", interest,
                      str(e.get("modality") or "-"), liked_txt)
    console.print(table)
    dist = Table(title="interest distribution (top 5)")
    dist.add_column("cluster", justify="right")
    dist.add_column("label")
    dist.add_column("share", justify="right")
    interests = out["interests"] if "interests" in out else out["query"]["interests"]
    for i in interests:
        dist.add_row(str(i["cluster"]), i["label"], f"{i['probability']:.1%}")
    console.print(dist)


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend_command)
