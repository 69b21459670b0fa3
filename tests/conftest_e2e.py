"""Session-scoped end-to-end fixtures: one tiny trained demo, built into a Bento, served once.

``tiny_demo`` runs the real main job (``mixrec demo --no-serve``) in a subprocess with
tiny sizes into a temporary BENTOML_HOME: demo catalog, encoding, training, model
store, ``bentoml build``. ``tiny_bento_server`` serves that built Bento with
``tests/server_harness.py``. Both are shared by every e2e test of the session, so the
expensive steps run once. Imported by tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from server_harness import REPO_ROOT, Server, serve_bento

TINY_ITEMS = 24  # the generator's minimum: every category with every item type
TINY_USERS = 30
TINY_EPOCHS = 3
DEMO_TIMEOUT_S = 600
SERVE_GRACE_S = 5.0  # the served state is throwaway: do not wait long for a graceful stop


@dataclass(frozen=True)
class TinyDemo:
    data_dir: Path
    bentoml_home: Path
    bento_tag: str
    model_tag: str
    serve_env: dict  # MIXREC_* overrides for serving the built Bento (state under data_dir/state)
    seconds: float

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def bento_dir(self) -> Path:
        version = self.bento_tag.split(":", 1)[1]
        return self.bentoml_home / "bentos" / self.bento_tag.split(":", 1)[0] / version

    def env(self) -> dict[str, str]:
        """Environment for subprocesses that must see this demo's model store."""
        return {**self.serve_env, "BENTOML_HOME": str(self.bentoml_home)}


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> TinyDemo:
    root = tmp_path_factory.mktemp("tiny-demo")
    home, data = root / "bentoml", root / "data"
    env = {**os.environ, "BENTOML_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "BENTOML_DO_NOT_TRACK": "true",
           "MIXREC__MODEL__EPOCHS": str(TINY_EPOCHS)}
    env.pop("MIXREC_CONFIG", None)
    cmd = [sys.executable, "-c", "from tools.cli import main; main()", "demo", "--no-serve", "--no-progress",
           "--data-dir", str(data), "--items", str(TINY_ITEMS), "--users", str(TINY_USERS), "--seed", "0"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"mixrec demo --no-serve failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-4000:]}")
    result = json.loads((data / "bento.json").read_text())
    return TinyDemo(data_dir=data, bentoml_home=home, bento_tag=result["bento"], model_tag=result["model"],
                    serve_env=result["serve_env"], seconds=seconds)


@pytest.fixture(scope="session")
def tiny_bento_server(tiny_demo: TinyDemo, tmp_path_factory) -> Iterator[Server]:
    """The built tiny Bento served by ``bentoml serve <tag>`` on a free loopback port."""
    with serve_bento(tiny_demo.bento_tag, env=tiny_demo.env(), log_dir=tmp_path_factory.mktemp("serve-logs"),
                     cwd=tiny_demo.data_dir, grace_s=SERVE_GRACE_S) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: Server):
    """An HTTP client on the module's own served Bento (each e2e module defines ``server``; a module
    that needs other headers, e.g. an API key, defines its own ``client``)."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
