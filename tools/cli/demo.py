"""``mixrec demo`` (the main job) and ``mixrec build`` (package existing artifacts as a Bento).

mixrec demo: demo catalog -> encode -> train -> model store -> ``bentoml build`` -> serve the
built Bento on localhost until Ctrl-C, printing curl and Python examples with real ids.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer
from rich.console import Console
from rich.table import Table

console = Console()


class _Steps:
    """Numbered steps with wall-clock timings, summarised in a table at the end."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.n = 0
        self.timings: list[tuple[str, float, str]] = []

    @contextmanager
    def step(self, title: str) -> Iterator[dict]:
        self.n += 1
        console.rule(f"[bold cyan][{self.n}/{self.total}] {title}", align="left")
        note: dict = {"result": ""}
        t0 = time.perf_counter()
        yield note
        seconds = time.perf_counter() - t0
        self.timings.append((title, seconds, note["result"]))
        console.print(f"[green]done[/green] {title} in {seconds:.1f}s" + (f"  ({note['result']})" if note["result"] else ""))

    def table(self) -> Table:
        t = Table(title="mixrec demo: steps")
        t.add_column("#", justify="right")
        t.add_column("step")
        t.add_column("seconds", justify="right")
        t.add_column("result")
        for i, (title, s, result) in enumerate(self.timings, 1):
            t.add_row(str(i), title, f"{s:.1f}", result)
        return t


def _print_block(title: str, text: str) -> None:
    # Plain text, never re-wrapped by rich, so the commands copy-paste as printed.
    console.rule(f"[bold green]{title}", align="left")
    console.print(text, soft_wrap=True, highlight=False, markup=False)
    console.rule(style="green")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def examples_text(base_url: str, ex) -> str:
    """curl and Python calls that work against the served demo Bento."""
    def curl(api: str, body: dict) -> str:
        return (f"curl -s -X POST {base_url}/{api} -H 'Content-Type: application/json' \\\n"
                f"     -d {shlex.quote(json.dumps(body))}")

    return "\n".join([
        "# health and metrics",
        f"curl -s {base_url}/readyz && curl -s {base_url}/metrics | head",
        "",
        f"# recommend for a known user ({ex.user_id})",
        curl("recommend", {"user_id": ex.user_id, "k": 5}),
        "",
        "# a new user who describes what they like",
        curl("recommend_by_query", {"text": ex.query_text, "k": 5}),
        "",
        f"# items similar to the video {ex.item_title!r}",
        curl("similar_items", {"item_id": ex.item_id, "k": 5}),
        "",
        "# the same from Python",
        "import bentoml",
        f'with bentoml.SyncHTTPClient("{base_url}") as client:',
        f'    print(client.recommend(user_id="{ex.user_id}", k=5))',
        f'    print(client.recommend_by_query(text="{ex.query_text}", k=5))',
        f'    print(client.similar_items(item_id="{ex.item_id}", k=5))',
        "",
        f"# API docs (Swagger UI): {base_url}/   OpenAPI: {base_url}/docs.json",
    ])


def demo_command(
    config: Path = typer.Option(None, "--config", "-c", help="Config to train, build and serve with (default: $MIXREC_CONFIG or configs/offline.yaml); the Bento serves exactly it"),
    data_dir: Path = typer.Option(Path("data/demo"), "--data-dir", help="Where the catalog, embeddings, artifacts and served state live"),
    port: int = typer.Option(3000, "--port", min=1, max=65535, help="Port of the served Bento on 127.0.0.1"),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="--no-serve: build everything, print the examples, exit"),
    seed: int = typer.Option(0, "--seed", help="Demo catalog seed (same seed, same catalog: generation is skipped)"),
    items: int = typer.Option(300, "--items", min=24, help="Demo catalog size"),
    users: int = typer.Option(400, "--users", min=1, help="Synthetic users"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The main job: generate the demo catalog, encode it, train, build ONE Bento and serve it."""
    from encoders.errors import EncoderError
    from tools import packaging
    from tools.demo import job as demo_job
    from mixrec.config import DEFAULT_CONFIG, ENV_CONFIG_FILE, ConfigError, load_config

    started = time.perf_counter()
    steps = _Steps(total=6 if serve else 5)
    sizes = demo_job.DemoSizes(seed=seed, n_items=items, n_users=users)
    data_dir.mkdir(parents=True, exist_ok=True)
    if serve and not _port_free(port):
        _fail(f"port {port} on 127.0.0.1 is already in use; pick another with --port")
    try:
        cfg = load_config(config)
        with steps.step("demo catalog") as note:
            generated, info = demo_job.ensure_catalog(data_dir, sizes, progress)
            note["result"] = (f"{'generated' if generated else 'already there, skipped'}: {info['n_items']} items, "
                              f"{info['n_users']} users, seed {info['seed']}")
        with steps.step("encode text / image / audio / video") as note:
            emb, stats = demo_job.ensure_embeddings(data_dir, cfg, progress)
            note["result"] = ("cached" if stats is None else
                              ", ".join(f"{m} {stats[m]['count']}" for m in ("text", "image", "audio", "video")))
        with steps.step("train fusion + LightFM hybrid") as note:
            model = demo_job.train_model(data_dir, cfg, emb, progress)
            note["result"] = f"{len(model.item_ids())} items, {len(model.known_users())} users -> {data_dir / demo_job.ARTIFACTS_DIR}"
        with steps.step("save to the BentoML model store") as note:
            model_tag = demo_job.store_model(model, sizes)
            note["result"] = model_tag
        with steps.step("bentoml build") as note:
            bento_tag = packaging.build_bento(config or os.environ.get(ENV_CONFIG_FILE) or DEFAULT_CONFIG,
                                              model_tag=model_tag)
            note["result"] = bento_tag
    except (ConfigError, EncoderError, demo_job.DemoDataError, packaging.PackagingError) as e:
        _fail(str(e))

    examples = demo_job.pick_examples(data_dir)
    base_url = f"http://127.0.0.1:{port}"
    # State (database, media, checkpoints) per model version: a retrained model starts clean.
    env = packaging.serve_env(bento_tag, model_tag, data_dir / demo_job.STATE_DIR / model_tag.split(":")[1])
    console.print(steps.table())
    console.print(f"Bento [bold]{bento_tag}[/bold] holds model [bold]{model_tag}[/bold]; "
                  f"total {time.perf_counter() - started:.1f}s")
    serve_line = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + \
        " ".join(packaging.serve_command(bento_tag, port))
    demo_job.write_result(data_dir, bento_tag=bento_tag, model_tag=model_tag, serve_env=env)
    if not serve:
        _print_block("serve it with", serve_line)
        _print_block("then call it", examples_text(base_url, examples))
        return
    with steps.step(f"bentoml serve {bento_tag} on {base_url} (Ctrl-C stops)"):
        _serve_foreground(bento_tag, port, env, base_url, examples)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _serve_foreground(bento_tag: str, port: int, env: dict[str, str], base_url: str, examples) -> None:
    from tools import packaging
    from mixrec.process_tree import ProcessTree, wait_http_ready

    tree = ProcessTree(packaging.serve_command(bento_tag, port), env=packaging.child_env(env))
    # Ctrl-C reaches only us (the server has its own session); SIGTERM gets the same clean stop.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        wait_http_ready(tree, f"{base_url}/readyz", timeout_s=300)
        _print_block(f"mixrec is serving on {base_url} (Ctrl-C stops)", examples_text(base_url, examples))
        while tree.running():
            tree.track()
            time.sleep(1.0)
        code = tree.process.returncode
        if code not in (0, -signal.SIGINT, -signal.SIGTERM):
            console.print(f"[red]bentoml serve exited with code {code}[/red]")
            raise typer.Exit(1)
        console.print("the server stopped")
    except typer.Exit:  # click's Exit is a RuntimeError: let it through untouched
        raise
    except RuntimeError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        console.print("stopping the server ...")
    finally:
        tree.stop()


def build_command(
    config: Path = typer.Option(None, "--config", "-c", help="Config the Bento serves: encoders, fusion, model, serving (default: $MIXREC_CONFIG or configs/bento.yaml; MIXREC__* overrides apply)"),
    artifacts: Path = typer.Option(None, "--artifacts", help="A trained artifacts directory to put into the model store and package (default: the config's serving.artifacts)"),
    version: str = typer.Option(None, "--version", help="Bento version (default: generated)"),
    base: str = typer.Option("public", "--base", help="Container base the Bento is built for: public (python:3.11-slim, packages from PyPI), local (deploy/base-image.sh, packages from a build-time wheelhouse; no network), or an image reference"),
    build_dir: Path = typer.Option(None, "--build-dir", help="Stage the build context here and keep it (default: a temporary directory); nothing in the installed mixrec tree is written"),
    bentofile: Path = typer.Option(None, "--bentofile", help="Base bentofile (code, packages, envs, docker options; default: mixrec's own); models and plugin packages are derived from the config"),
) -> None:
    """Build the Bento (bentoml build, offline) serving CONFIG with its trained model; refused when the model
    was trained with other encoders than CONFIG serves."""
    from tools import packaging
    from mixrec.config import ConfigError

    t0 = time.perf_counter()
    try:
        model_tag = None
        if artifacts is not None:
            model_tag = packaging.store_model_dir(artifacts, labels={"source": str(artifacts.resolve())})
            console.print(f"stored {artifacts} as [bold]{model_tag}[/bold]")
        with console.status("bentoml build ..."):
            tag = packaging.build_bento(config, model_tag=model_tag, version=version, base=base,
                                        bentofile=bentofile or packaging.BENTOFILE, build_dir=build_dir)
    except (ConfigError, packaging.PackagingError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    model_tag = packaging.bento_models(tag)[0]
    env = packaging.serve_env(tag, model_tag, Path("data/state") / model_tag.split(":")[1])
    console.print(f"built [bold]{tag}[/bold] (model {model_tag}) in {time.perf_counter() - t0:.1f}s")
    _print_block("serve it with", " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
                 + " ".join(packaging.serve_command(tag, 3000)))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
    app.command("build")(build_command)

