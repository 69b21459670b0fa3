"""Run a real ``bentoml serve`` in a subprocess for end-to-end tests, and always clean it up.

    with serve_bento("services.text_encoder:TextEncoder", env={...}) as server:
        httpx.get(f"{server.url}/readyz")

The server starts in its own session and is stopped by its own pid: SIGTERM to its
process group, then SIGKILL after a grace period to every process of its tree that is
still alive (circus workers ``setsid()`` into their own groups, bentoml issue #4193;
``mixrec.process_tree`` tracks them by pid). The server log goes to a file and is
quoted when start-up fails.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from tools.packaging import OFFLINE_ENV, bentoml_executable
from mixrec.process_tree import ProcessTree, wait_http_ready

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_CHARS = 6000


@dataclass
class Server:
    url: str
    port: int
    tree: ProcessTree
    log_path: Path
    ready_s: float = 0.0  # start to ready, of the attempt that started

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def recommender_env(artifacts_dir: Path, state: Path, **overrides: str) -> dict[str, str]:
    """Environment for ``bentoml serve services.recommender:Recommender`` on a throwaway state under ``state``:
    the offline config, the given trained artifacts, SQLite, no automatic updates; ``overrides`` are
    extra ``MIXREC_*`` variables (``MIXREC__SERVING__WORKERS="2"``, ...).

    Each server gets its own ``BENTOML_HOME``: ``bentoml serve`` empties ``$BENTOML_HOME/prometheus_multiproc_dir``
    when it starts, so two servers sharing a home wipe each other's metrics (a CI run lost its
    ``/metrics`` series to a benchmark's server started beside it)."""
    return {"MIXREC_CONFIG": str(REPO_ROOT / "configs" / "offline.yaml"),
            "BENTOML_HOME": str(state / "bentoml"),
            "MIXREC__SERVING__ARTIFACTS": str(artifacts_dir),
            "MIXREC__SERVING__STATE_DIR": str(state / "state"),
            "MIXREC__STORAGE__URL": f"sqlite:///{state / 'db.sqlite'}",
            "MIXREC__STORAGE__MEDIA_DIR": str(state / "media"),
            "MIXREC__SERVING__UPDATE_EVERY": "0",
            **overrides}


def engine_config(artifacts_dir: Path, state: Path, **serving):
    """The same setup as ``recommender_env`` for an in-process ``RecommenderEngine``; ``serving`` overrides
    ``serving.*`` fields (``workers=2``)."""
    from mixrec.config import load_config

    env = recommender_env(artifacts_dir, state)
    env.pop("MIXREC_CONFIG")
    env.update({f"MIXREC__SERVING__{k.upper()}": str(v) for k, v in serving.items()})
    return load_config(REPO_ROOT / "configs" / "offline.yaml", environ=env)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A port picked free can be taken before the server binds it: our HTTP port (free_port) and the two
# loopback ports BentoML reserves for its circus arbiter and releases before binding them
# (bentoml/_internal/utils/circus ``reserve_free_port``). A start that lost that race is retried on
# new ports; any other failure is not.
PORT_RACE = "Address already in use"
START_ATTEMPTS = 3


def lost_port_race(tree: ProcessTree, log_text: str) -> bool:
    """The server exited because a port it was given was taken in the meantime."""
    return not tree.running() and PORT_RACE in log_text


def _stop(server: Server, grace_s: float) -> None:
    server.tree.stop(grace_s)
    left = server.tree.leftovers()
    assert not left, f"bentoml serve left processes behind: {left}"


def launch_bento(target: str, *, env: Mapping[str, str] | None = None, log_dir: Path | None = None,
                 cwd: Path | None = None, timeout_s: float = 240.0, grace_s: float = 10.0) -> Server:
    """Start ``bentoml serve target`` on a free loopback port and wait until it is ready; the caller
    stops it (``serve_bento`` does). A start that lost a port race is retried on new ports; any other
    failure stops what was started and is raised."""
    log_dir = Path(log_dir or os.environ.get("TMPDIR", "/tmp"))
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        log_path = log_dir / f"bentoml-serve-{port}.log"
        cmd = [bentoml_executable(), "serve", target, "--host", "127.0.0.1", "--port", str(port)]
        t0 = time.monotonic()
        with open(log_path, "wb") as log:
            tree = ProcessTree(cmd, env={**os.environ, **OFFLINE_ENV, **(env or {})}, cwd=cwd or REPO_ROOT,
                               output=log)
        server = Server(url=f"http://127.0.0.1:{port}", port=port, tree=tree, log_path=log_path)
        try:
            wait_http_ready(tree, f"{server.url}/readyz", timeout_s, server.log_tail)
        except BaseException as e:
            raced = isinstance(e, RuntimeError) and lost_port_race(tree, server.log_tail())
            _stop(server, grace_s)
            if not raced or attempt == START_ATTEMPTS:
                raise
            continue
        server.ready_s = time.monotonic() - t0
        return server
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextmanager
def serve_bento(target: str, *, env: Mapping[str, str] | None = None, log_dir: Path | None = None,
                cwd: Path | None = None, timeout_s: float = 240.0, grace_s: float = 10.0) -> Iterator[Server]:
    """Serve ``target`` (a Bento tag or ``module:Service``) on a free loopback port until the block ends.

    ``env`` overrides the inherited environment (MIXREC_CONFIG, MIXREC__SERVING__ARTIFACTS,
    MIXREC__STORAGE__URL, BENTOML_HOME, ...). The log is ``<log_dir>/bentoml-serve-<port>.log``.
    """
    server = launch_bento(target, env=env, log_dir=log_dir, cwd=cwd, timeout_s=timeout_s, grace_s=grace_s)
    try:
        yield server
    finally:
        _stop(server, grace_s)
