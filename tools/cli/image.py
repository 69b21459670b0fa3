"""``mixrec image``: the built Bento as an OCI image — build, push, pull, run — with no Docker daemon.

    mixrec build --base local                      # a Bento for the local base (deploy/base-image.sh)
    mixrec image build                              # buildah (chroot isolation) via bentoml containerize
    mixrec image push localhost/mixrec:TAG 127.0.0.1:5000/mixrec:TAG --insecure
    mixrec image run 127.0.0.1:5000/mixrec:TAG --pull --insecure --state-dir ./state --port 3000
"""

from __future__ import annotations

import shlex
import time
import uuid
from pathlib import Path

import typer
from rich.console import Console

image_app = typer.Typer(help="Build, push, pull and run the Bento as an OCI image (buildah/podman, no Docker daemon)",
                        no_args_is_help=True)
console = Console()


def _echo(line: str) -> None:
    console.print(line, soft_wrap=True, highlight=False, markup=False)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


def _latest_bento() -> str:
    import bentoml

    bentos = sorted(bentoml.list("mixrec"), key=lambda b: b.info.creation_time)
    if not bentos:
        _fail("no mixrec Bento in the store: run `mixrec demo` then `mixrec build --base local` first")
    return str(bentos[-1].tag)


@image_app.command("build")
def build_command(
    bento: str = typer.Argument(None, help="Bento tag (default: the newest mixrec Bento)"),
    tag: str = typer.Option(None, "--tag", "-t", help="Image tag (default: localhost/mixrec:<bento version>)"),
    layers: bool = typer.Option(True, "--layers/--no-layers", help="Keep and reuse buildah's layer cache"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step again (a cold build); refreshes the cache"),
    wheelhouse_cache: Path = typer.Option(None, "--wheelhouse-cache", envvar="MIXREC_WHEELHOUSE_CACHE",
                                          help="Where wheelhouses are cached (default ~/.cache/mixrec/wheelhouse)"),
) -> None:
    """Turn a built Bento into an OCI image with buildah (daemonless, --isolation chroot)."""
    from tools import image

    bento = bento or _latest_bento()
    tag = tag or f"localhost/mixrec:{bento.split(':', 1)[1]}"
    console.rule(f"[bold cyan]image build: {bento} -> {tag}", align="left")
    try:
        built = image.build(bento, tag, _echo, layers=layers, cache_dir=wheelhouse_cache, no_cache=no_cache)
    except image.ImageError as e:
        _fail(str(e))
    console.print(f"[green]built[/green] {built.tag}  id {built.image_id[:12]}  "
                  f"{built.size_bytes / 1e9:.2f} GB  in {built.seconds:.0f}s")
    console.print(built.tag, highlight=False)


@image_app.command("push")
def push_command(
    image_ref: str = typer.Argument(..., metavar="IMAGE", help="Local image (e.g. localhost/mixrec:TAG)"),
    ref: str = typer.Argument(..., metavar="REF", help="Destination, e.g. ghcr.io/acme/mixrec:1 or 127.0.0.1:5000/mixrec:1"),
    insecure: bool = typer.Option(False, "--insecure", help="Plain HTTP / no TLS verification; loopback registries only"),
    username: str = typer.Option(None, "--username", "-u", envvar="MIXREC_REGISTRY_USERNAME"),
    password: str = typer.Option(None, "--password", "-p", envvar="MIXREC_REGISTRY_PASSWORD",
                                 help="Prefer the env var (argv is visible to other users)"),
    authfile: Path = typer.Option(None, "--authfile", help="An auth.json / ~/.docker/config.json to use "
                                  "(default: podman's usual places)"),
    cert_dir: Path = typer.Option(None, "--cert-dir", help="Directory of CA certificates (*.crt) for a registry "
                                  "with a private CA (default: the system's and /etc/containers/certs.d)"),
) -> None:
    """Push the image to any OCI registry (TLS verified by default)."""
    from tools import image

    t0 = time.perf_counter()
    try:
        digest = image.push(image_ref, ref, _echo, insecure=insecure, username=username, password=password,
                            authfile=authfile, cert_dir=cert_dir)
    except image.ImageError as e:
        _fail(str(e))
    console.print(f"[green]pushed[/green] {ref}@{digest} in {time.perf_counter() - t0:.0f}s", highlight=False)


@image_app.command("pull")
def pull_command(
    ref: str = typer.Argument(..., metavar="REF"),
    insecure: bool = typer.Option(False, "--insecure", help="Loopback registries only"),
    username: str = typer.Option(None, "--username", "-u", envvar="MIXREC_REGISTRY_USERNAME"),
    password: str = typer.Option(None, "--password", "-p", envvar="MIXREC_REGISTRY_PASSWORD"),
    authfile: Path = typer.Option(None, "--authfile"),
) -> None:
    """Pull an image from a registry into containers-storage."""
    from tools import image

    try:
        image.pull(ref, _echo, insecure=insecure, username=username, password=password, authfile=authfile)
    except image.ImageError as e:
        _fail(str(e))


@image_app.command("run")
def run_command(
    ref: str = typer.Argument(..., metavar="REF", help="Image to run (local or in a registry)"),
    port: int = typer.Option(3000, "--port", min=1, max=65535, help="Host port (published on --host)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Host address to publish on"),
    state_dir: Path = typer.Option(None, "--state-dir", help="Host directory mounted at /data for the SQLite "
                                   "database, media and model checkpoints (omit with a PostgreSQL URL and "
                                   "a shared media dir)"),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for the service, e.g. "
                                  "MIXREC__STORAGE__URL=postgresql+psycopg://u:pw@db/mixrec, MIXREC__SERVING__API_KEY=..."),
    name: str = typer.Option(None, "--name", help="Container name (default: mixrec-<random>)"),
    pull: bool = typer.Option(False, "--pull", help="Pull REF from its registry first"),
    insecure: bool = typer.Option(False, "--insecure", help="With --pull: loopback registries only"),
    runtime: str = typer.Option(None, "--runtime", envvar="MIXREC_PODMAN_RUNTIME",
                                help="OCI runtime for podman (e.g. runc where crun cannot set up cgroups)"),
    podman_opt: list[str] = typer.Option([], "--podman-opt", envvar="MIXREC_PODMAN_OPTS",
                                         help="Extra `podman run` option, repeatable (e.g. --ulimit=nofile=8192:8192, --device nvidia.com/gpu=all)"),
    timeout: float = typer.Option(300, "--timeout", help="Seconds to wait for /readyz"),
) -> None:
    """Run the image detached, state on a volume, port on localhost; wait for /readyz."""
    from tools import image

    envs = {}
    for item in env:
        if "=" not in item:
            _fail(f"--env wants KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        envs[k] = v
    opts = [o for item in podman_opt for o in shlex.split(item)]
    name = name or f"mixrec-{uuid.uuid4().hex[:8]}"
    try:
        if pull:
            image.pull(ref, _echo, insecure=insecure)
        running = image.run(ref, _echo, name=name, port=port, state_dir=state_dir, env=envs, host=host,
                            podman_opts=opts, runtime=runtime, timeout_s=timeout)
    except image.ImageError as e:
        _fail(str(e))
    console.print(f"[green]ready[/green] {running.url} (container {running.name}) "
                  f"{running.seconds_to_ready:.1f}s after `podman run`", highlight=False)
    console.print(f"stop it with: podman stop {running.name} && podman rm {running.name}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
