"""Swap every encoder by configuration, end to end, with no file in the repository edited (issue 11).

One module fixture runs the README's "Swap an encoder" path in a temporary venv that sees this project's
packages plus the example plugin (examples/encoder-plugin, installed like any third-party distribution):

  text   a tiny BERT saved with transformers' save_pretrained, imported into the BentoML model store
  image  another open_clip architecture (a 40-d ViT) saved in open_clip's local-dir layout
  audio  the plugin's ``band-energy`` kind (24-d)

config -> ``mixrec encode`` -> ``mixrec train`` -> ``mixrec build --config`` -> ``bentoml serve``, all from a
working directory outside the repository. The Bento is served once and shared; the mismatch cases reuse
it with one override each and must be refused at start (never ready, writes answered 503, nothing
committed) or at build, with messages naming both sides.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tools.packaging import OFFLINE_ENV
from mixrec.process_tree import ProcessTree
from server_harness import REPO_ROOT, free_port, serve_bento

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY_VIT = {"embed_dim": 40,
            "vision_cfg": {"image_size": 48, "layers": 1, "width": 48, "head_width": 24, "patch_size": 16},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1}}
DIMS = {"text": 48, "image": 40, "audio": 24}
CMD_TIMEOUT_S = 600


@dataclass
class Swap:
    root: Path
    venv_python: Path
    env: dict
    config: Path
    bento_tag: str
    bento_dir: Path
    model_tag: str
    bert_v1: str
    bert_v2: str
    train_output: str
    repo_status: dict

    def mixrec(self, *args: str, extra_env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.venv_python), "-c", "from tools.cli import main; main()", *args],
                              cwd=self.root, env={**self.env, **(extra_env or {})}, capture_output=True, text=True,
                              timeout=CMD_TIMEOUT_S)
        if check and proc.returncode != 0:
            pytest.fail(f"mixrec {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def serve_env(self, state: Path, **overrides: str) -> dict:
        return {**self.env, "MIXREC_CONFIG": str(self.bento_dir / "src/configs/bento.yaml"),
                "MIXREC__STORAGE__URL": f"sqlite:///{state / 'mixrec.db'}",
                "MIXREC__STORAGE__MEDIA_DIR": str(state / "media"),
                "MIXREC__SERVING__STATE_DIR": str(state / "model"), **overrides}


def _git_status() -> dict:
    """What the swap must not touch: the files the old path had to edit (bentofile, configs) and the set of
    untracked files in the repository (anything the commands would have written there)."""
    import hashlib

    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.split()
    files = [REPO_ROOT / "bentofile.yaml", *sorted((REPO_ROOT / "configs").glob("*.yaml"))]
    return {"untracked": untracked, **{f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}}


def _make_venv(root: Path) -> Path:
    """A venv that sees this project's environment (a .pth adding its site-packages) plus the example plugin,
    installed from a copy like any third-party distribution (no network, no torch reinstalled)."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed (it is in the dev extra: pip install -e '.[dev]')")
    venv = root / "venv"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "mixrec_host.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    plugin = shutil.copytree(REPO_ROOT / "examples/encoder-plugin", root / "encoder-plugin")
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(py), "--no-deps", "--no-build-isolation",
                    "--offline", str(plugin)], check=True, timeout=300)
    # the console script pip would write for bentoml (mixrec runs `bentoml` from beside its interpreter)
    script = venv / "bin" / "bentoml"
    script.write_text(f"#!{py}\nimport sys\nfrom bentoml_cli.cli import cli\nsys.exit(cli())\n")
    script.chmod(0o755)
    return py


def _save_models(root: Path) -> tuple[Path, Path]:
    """What a user brings: a BERT saved with transformers, an open_clip model in local-dir layout."""
    import open_clip
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from conftest import encoder_config
    from encoders.registry import build_encoder
    from encoders.weights import bundled_tokenizer_dir

    def bert(seed: int, out: Path) -> Path:
        tok = AutoTokenizer.from_pretrained(str(bundled_tokenizer_dir()), local_files_only=True)
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=len(tok), hidden_size=DIMS["text"], num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64, max_position_embeddings=128),
                  add_pooling_layer=False).save_pretrained(out)
        tok.save_pretrained(out)
        return out

    bert(3, root / "tiny-bert")
    bert(4, root / "tiny-bert-v2")
    (root / "vit-cfg").mkdir()
    (root / "vit-cfg" / "swap-tiny-vit.json").write_text(json.dumps(TINY_VIT))
    open_clip.add_model_config(root / "vit-cfg" / "swap-tiny-vit.json")
    build_encoder(encoder_config("open-clip", "swap-tiny-vit", "random", seed=5)).save(root / "tiny-vit")
    return root / "tiny-bert", root / "tiny-vit"


@pytest.fixture(scope="module")
def swap(tmp_path_factory) -> Swap:
    before = _git_status()
    root = tmp_path_factory.mktemp("swap")
    py = _make_venv(root)
    env = {**os.environ, **OFFLINE_ENV, "BENTOML_HOME": str(root / "bentoml"), "COLUMNS": "200"}
    env.pop("MIXREC_CONFIG", None)
    bert_dir, vit_dir = _save_models(root)
    s = Swap(root, py, env, root / "swap.yaml", "", Path(), "", "", "", "", before)
    out = s.mixrec("models", "import", str(bert_dir), "--name", "tiny-bert", "--kind", "hf-text").stdout
    s.bert_v1 = re.search(r"imported (tiny-bert:\w+)", out).group(1)
    s.config.write_text(yaml.safe_dump({
        "profile": "swap",
        "encoders": {"text": {"kind": "hf-text", "model": "tiny-bert", "weights": "bentoml:tiny-bert",
                              "options": {"pooling": "cls", "max_length": 64}},
                     "image": {"kind": "open-clip", "model": "swap-tiny-vit", "weights": f"local:{vit_dir}"},
                     "audio": {"kind": "band-energy", "model": "band-energy", "options": {"bands": 12}}},
        "fusion": {"shared_dim": 64, "codebook_size": 8},
        "model": {"epochs": 3, "no_components": 16},
        "storage": {"url": "sqlite:///state/mixrec.db", "media_dir": "state/media"},
        "serving": {"artifacts": "bentoml:mixrec-hybrid", "state_dir": "state/model", "update_every": 0}}))
    s.mixrec("demo-data", "--out", "catalog", "--items", "24", "--users", "30", "--no-progress")
    s.mixrec("encode", "--config", str(s.config), "--catalog-dir", "catalog", "--out", "emb.npz", "--no-progress")
    s.train_output = s.mixrec("train", "--config", str(s.config), "--catalog-dir", "catalog", "--embeddings",
                              "emb.npz", "--out", "artifacts", "--model-store", "mixrec-hybrid", "--no-progress").stdout
    out = s.mixrec("build", "--config", str(s.config)).stdout
    s.bento_tag = re.search(r"built (mixrec:\w+) \(model (mixrec-hybrid:\w+)\)", out).group(1)
    s.model_tag = re.search(r"built (mixrec:\w+) \(model (mixrec-hybrid:\w+)\)", out).group(2)
    s.bento_dir = root / "bentoml" / "bentos" / "mixrec" / s.bento_tag.split(":")[1]
    # a newer version of the text weights arrives after the build (same dims, other weights)
    out = s.mixrec("models", "import", str(root / "tiny-bert-v2"), "--name", "tiny-bert", "--kind", "hf-text").stdout
    s.bert_v2 = re.search(r"imported (tiny-bert:\w+)", out).group(1)
    return s


@pytest.fixture(scope="module")
def served(swap, tmp_path_factory):
    state = tmp_path_factory.mktemp("swap-state")
    cmd_env = swap.serve_env(state)
    # `bentoml serve` from the venv's own script: the workers run that interpreter, which has the plugin
    with _venv_bentoml(swap):
        with serve_bento(swap.bento_tag, env=cmd_env, log_dir=state, cwd=swap.root, grace_s=5) as server:
            yield server


class _venv_bentoml:
    """Make tests/server_harness use the venv's bentoml (it runs ``bentoml`` beside sys.executable)."""

    def __init__(self, swap: Swap) -> None:
        self.swap = swap

    def __enter__(self):
        import server_harness

        self.saved = server_harness.bentoml_executable
        server_harness.bentoml_executable = lambda: str(self.swap.venv_python.parent / "bentoml")

    def __exit__(self, *exc):
        import server_harness

        server_harness.bentoml_executable = self.saved


def test_swapped_encoders_train_build_and_serve_without_editing_the_repository(swap, served):
    info = httpx.post(f"{served.url}/info", json={}, timeout=60).json()
    assert {m: info["encoders"][m]["dim"] for m in DIMS} == DIMS
    assert info["encoders"]["audio"]["kind"] == "band-energy" and info["encoders"]["image"]["model"] == "swap-tiny-vit"
    # honest: a BERT saved with transformers carries no mark of being trained
    assert info["encoders"]["text"]["trained"] is False
    assert info["model"]["adjusted_config"][0]["field"] == "fusion.shared_dim"
    assert "adjusted fusion.shared_dim" in swap.train_output and "64 ->" in swap.train_output
    from mixrec.catalog import read_interactions

    user = read_interactions(swap.root / "catalog")[0].user_id
    r = httpx.post(f"{served.url}/recommend", json={"user_id": user, "k": 5}, timeout=60)
    assert r.status_code == 200 and r.json()["items"], r.text
    r = httpx.post(f"{served.url}/recommend_by_query", json={"text": "warm jazz piano", "k": 5}, timeout=60)
    assert r.status_code == 200 and len(r.json()["items"]) == 5, r.text
    r = httpx.post(f"{served.url}/add_items", json={"items": [{"item_id": "swap-new-1", "type": "product",
                                                              "title": "Trail running shoes"}]}, timeout=60)
    assert r.status_code == 200, r.text
    # the Bento carries the plugin's distribution (a wheel: it was installed from a directory) and derived models
    bento = yaml.safe_load((swap.bento_dir / "bento.yaml").read_text())
    tags = [m["tag"] for m in bento["models"]]
    assert tags[0] == swap.model_tag and swap.bert_v1 in tags
    # the model store entry carries what `mixrec info` reads (the report `mixrec train` wrote)
    entry = swap.root / "bentoml" / "models" / "mixrec-hybrid" / swap.model_tag.split(":")[1]
    assert (entry / "calibration.json").read_text() == (swap.root / "artifacts" / "calibration.json").read_text()
    assert list((swap.bento_dir / "env/python/wheels").glob("mixrec_band_energy-0.1.0-*.whl"))
    assert _git_status() == swap.repo_status  # nothing in the repository was edited


def test_a_version_imported_after_the_build_does_not_change_the_bento(swap, served):
    """The config said ``bentoml:tiny-bert`` (unpinned); the Bento pinned the version it was built with."""
    info = httpx.post(f"{served.url}/info", json={}, timeout=60).json()
    assert info["encoders"]["text"]["weights"] == f"bentoml:{swap.bert_v1}" != f"bentoml:{swap.bert_v2}"


@pytest.mark.parametrize("override", ["unpinned", "wrong-version"])
def test_build_refuses_weights_the_model_was_not_trained_with(swap, override):
    extra = {} if override == "unpinned" else {"MIXREC__ENCODERS__TEXT__WEIGHTS": f"bentoml:{swap.bert_v2}"}
    proc = swap.mixrec("build", "--config", str(swap.config), extra_env=extra, check=False)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out
    assert f"the trained model {swap.model_tag}" in out and f"weights bentoml:{swap.bert_v1}" in out
    assert f"the encoders {swap.config} serves has hf-text:tiny-bert (weights bentoml:{swap.bert_v2}" in out


@pytest.mark.parametrize("case", ["other-weights-same-dims", "other-dims"])
def test_served_encoders_that_do_not_match_are_refused_at_start(swap, case, tmp_path):
    from mixrec.storage.store import CatalogStore

    overrides = ({"MIXREC__ENCODERS__TEXT__WEIGHTS": f"bentoml:{swap.bert_v2}"} if case == "other-weights-same-dims"
                 else {"MIXREC__ENCODERS__AUDIO__OPTIONS": "{bands: 16}"})
    env = swap.serve_env(tmp_path, **overrides)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        tree = ProcessTree([str(swap.venv_python.parent / "bentoml"), "serve", swap.bento_tag, "--host", "127.0.0.1",
                            "--port", str(port)], env=env, cwd=swap.root, output=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, ready_seen = time.monotonic() + 300, []
        while time.monotonic() < deadline and "refuses to start" not in log_path.read_text(errors="replace"):
            assert tree.running(), log_path.read_text(errors="replace")[-4000:]
            try:
                ready_seen.append(httpx.get(f"{url}/readyz", timeout=15).status_code)
            except httpx.HTTPError:
                pass
            time.sleep(1)
        log_text = log_path.read_text(errors="replace")
        assert "refuses to start" in log_text, log_text[-4000:]
        for _ in range(3):
            ready_seen.append(httpx.get(f"{url}/readyz", timeout=15).status_code)
        assert 200 not in ready_seen
        r = httpx.post(f"{url}/add_items", json={"items": [{"item_id": "must-not-land", "type": "product",
                                                            "title": "Trail running shoes"}]}, timeout=60)
        assert r.status_code == 503, r.text
        msg = r.json()["error"]["message"]
        assert "the served encoder services has" in msg and "the trained artifacts" in msg and "Fix:" in msg
        assert ("weights sha256" in msg) if case == "other-weights-same-dims" else ("dim 32 vs 24" in msg)
    finally:
        tree.stop(5)
    store = CatalogStore(env["MIXREC__STORAGE__URL"])
    try:
        assert store.get_items(["must-not-land"]) == []  # no write committed
    finally:
        store.close()
