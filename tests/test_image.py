"""Ship it, end to end: Bento -> OCI image (buildah, no Docker daemon) -> registry -> pull -> run.

Marked ``image`` and left out of ``make test`` (pyproject addopts): it builds a ~6 GB image
(CUDA torch) and takes several minutes on 2 cores. Run it with ``make image-test``.

The flow, all real tools: the tiny demo's model -> ``mixrec build --base local`` -> the
same Bento served by ``bentoml serve`` (reference answers) -> ``mixrec image build``
(bentoml containerize, buildah --isolation chroot) -> Debian's ``docker-registry`` on a
free loopback port -> ``mixrec image push --insecure`` -> ``podman rmi`` -> ``mixrec image
run --pull`` -> /readyz, recommend, recommend_by_query (text) equal to the reference ->
everything stopped by pid / container id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from mixrec.catalog import read_interactions
from mixrec.process_tree import ProcessTree
from server_harness import REPO_ROOT, free_port, serve_bento

pytestmark = [pytest.mark.image, pytest.mark.e2e, pytest.mark.slow]

TOOLS = ("buildah", "podman", "docker-registry")
QUERY = "hiking backpacking camping"


def _missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _mixrec(args: list[str], env: dict, timeout: float, log: Path) -> str:
    cmd = [sys.executable, "-c", "from tools.cli import main; main()", *args]
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=timeout)
    with open(log, "a") as f:
        f.write(f"$ mixrec {' '.join(args)}\n{proc.stdout}\n{proc.stderr}\n")
    assert proc.returncode == 0, f"mixrec {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n" \
                                 f"{proc.stderr[-4000:]}"
    return proc.stdout


def _answers(url: str, user: str) -> dict:
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200
    rec = httpx.post(f"{url}/recommend", json={"user_id": user, "k": 6}, timeout=120)
    assert rec.status_code == 200, rec.text
    by_query = httpx.post(f"{url}/recommend_by_query", json={"text": QUERY, "k": 6}, timeout=120)
    assert by_query.status_code == 200, by_query.text
    return {"recommend": rec.json()["items"], "recommend_by_query": by_query.json()["items"]}


def _same(a: list[dict], b: list[dict]) -> None:
    assert [x["item_id"] for x in a] == [x["item_id"] for x in b]
    for x, y in zip(a, b):
        assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-6), (x["item_id"], x["score"], y["score"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry (distribution 2.8) on a free loopback port; stopped by its pid."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (make image-tools installs it)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    cfg = root / "config.yml"
    cfg.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n"
                   f"  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    with open(root / "registry.log", "wb") as log:
        tree = ProcessTree(["docker-registry", "serve", str(cfg)], env=dict(os.environ), output=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert tree.running() and time.monotonic() < deadline, (root / "registry.log").read_text()
            time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        tree.stop(5)
        shutil.rmtree(root / "data", ignore_errors=True)  # the pushed image, ~3.4 GB
        assert not tree.leftovers()


@pytest.mark.timeout(3600)
def test_bento_image_pushed_pulled_and_run_answers_like_bentoml_serve(tiny_demo, registry, tmp_path):
    missing = _missing_tools()
    if missing:
        pytest.skip(f"image builder tools not installed: {missing} (make image-tools installs them with apt-get)")
    timings: dict[str, float] = {}
    log = tmp_path / "image-e2e.log"
    env = {**os.environ, **tiny_demo.env(), "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("MIXREC_CONFIG", None)

    # the local base (Debian packages only), made once per machine
    from tools.packaging import LOCAL_BASE_IMAGE

    if subprocess.run(["podman", "image", "exists", LOCAL_BASE_IMAGE]).returncode != 0:
        t0 = time.perf_counter()
        subprocess.run(["bash", str(REPO_ROOT / "deploy/base-image.sh")], check=True, timeout=900)
        timings["base image"] = time.perf_counter() - t0

    out = _mixrec(["build", "--base", "local"], env, 600, log)
    bento = re.search(r"built (mixrec:\S+)", out).group(1)
    version = bento.split(":", 1)[1]

    seen: dict[str, int] = {}
    for r in read_interactions(tiny_demo.data_dir):
        seen[r.user_id] = seen.get(r.user_id, 0) + 1
    user = max(seen, key=seen.get)

    # reference: the same Bento under bentoml serve, its own state
    serve_state = tmp_path / "serve-state"
    bento_dir = tiny_demo.bentoml_home / "bentos/mixrec" / version
    bento_info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    frozen_env = {e["name"]: e["value"] for e in bento_info["envs"] if e["name"].startswith("MIXREC__ENCODERS__")}
    assert set(frozen_env) == {"MIXREC__ENCODERS__IMAGE__WEIGHTS", "MIXREC__ENCODERS__AUDIO__WEIGHTS"}
    serve_env = {**tiny_demo.env(), **frozen_env, "MIXREC_CONFIG": str(bento_dir / "src/configs/bento.yaml"),
                 "MIXREC__STORAGE__URL": f"sqlite:///{serve_state}/mixrec.db",
                 "MIXREC__STORAGE__MEDIA_DIR": str(serve_state / "media"),
                 "MIXREC__SERVING__STATE_DIR": str(serve_state / "model")}
    with serve_bento(bento, env=serve_env, log_dir=tmp_path, cwd=tiny_demo.data_dir, grace_s=5) as server:
        expected = _answers(server.url, user)

    fresh = tmp_path / "fresh-storage"
    fresh.mkdir()
    fresh_conf = fresh / "storage.conf"
    fresh_conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{fresh}/graph"\nrunroot = "{fresh}/run"\n')
    image_tag = f"localhost/mixrec-e2e:{version}"
    ref = f"{registry}/mixrec:{version}"
    container = f"mixrec-e2e-{version}"
    try:
        t0 = time.perf_counter()
        _mixrec(["image", "build", bento, "--tag", image_tag], env, 3600, log)
        timings["image build"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _mixrec(["image", "push", image_tag, ref, "--insecure"], env, 1800, log)
        timings["push"] = time.perf_counter() - t0
        # insecure is refused for a non-loopback registry
        proc = subprocess.run([sys.executable, "-c", "from tools.cli import main; main()", "image", "push",
                               image_tag, "registry.example.com/mixrec:x", "--insecure"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "loopback" in proc.stdout + proc.stderr
        subprocess.run(["podman", "rmi", image_tag], check=True, capture_output=True)
        assert subprocess.run(["podman", "image", "exists", ref]).returncode != 0
        # pull and run from an empty containers-storage: buildah's layer cache cannot stand in for the
        # registry, every layer comes over the wire
        run_env = {**env, "CONTAINERS_STORAGE_CONF": str(fresh_conf)}

        port = free_port()
        state = tmp_path / "container-state"
        t0 = time.perf_counter()
        out = _mixrec(["image", "run", ref, "--pull", "--insecure", "--port", str(port), "--state-dir", str(state),
                       "--name", container, "--timeout", "600"], run_env, 2400, log)
        timings["pull + run to /readyz"] = time.perf_counter() - t0
        got = _answers(f"http://127.0.0.1:{port}", user)
        # the container's encoders load the weights the Bento carries, not a seed
        info = httpx.post(f"http://127.0.0.1:{port}/info", json={}, timeout=60).json()["encoders"]
        assert info["image"]["weights"] == frozen_env["MIXREC__ENCODERS__IMAGE__WEIGHTS"]
        assert info["audio"]["weights"] == frozen_env["MIXREC__ENCODERS__AUDIO__WEIGHTS"]
        _same(got["recommend"], expected["recommend"])
        _same(got["recommend_by_query"], expected["recommend_by_query"])
        assert (state / "mixrec.db").is_file()  # state went to the volume
        conmon = subprocess.run(["podman", "inspect", "--format", "{{.State.ConmonPid}}", container],
                                capture_output=True, text=True, env=run_env).stdout.strip()
    finally:
        fresh_env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(fresh_conf)}
        subprocess.run(["podman", "stop", "-t", "10", container], capture_output=True, env=fresh_env)
        subprocess.run(["podman", "rm", "-f", container], capture_output=True, env=fresh_env)
        if fresh_conf.is_file():  # never without it: podman would fall back to the machine's storage
            for img in (ref, f"docker://{ref}"):
                subprocess.run(["podman", "rmi", "-f", img], capture_output=True, env=fresh_env)
            shutil.rmtree(fresh / "graph", ignore_errors=True)  # ~7 GB
        subprocess.run(["podman", "rmi", image_tag], capture_output=True)
        with open(log, "a") as f:
            f.write(json.dumps({k: round(v, 1) for k, v in timings.items()}) + "\n")
        print(json.dumps({k: round(v, 1) for k, v in timings.items()}))
    if conmon and conmon != "0":
        assert not Path(f"/proc/{conmon}").exists(), "the container's conmon outlived podman stop"
