"""Ship trained artifacts as one Bento: ``mixrec build --config FILE`` -> ``bentoml build`` -> ``bentoml serve``.

The Bento serves the config it is built with (``--config``, else ``$MIXREC_CONFIG``, else configs/bento.yaml,
plus ``MIXREC__*`` overrides), never a file edited in the source tree: the build copies the code named by
the bentofile's ``include`` into a staging directory, writes the resolved config there as
``configs/bento.yaml`` with every encoder's weights and the hybrid model pinned to exact model-store tags
(tools/bento_models.py), derives ``models:`` and the plugin kinds' packages from that config, and runs
``bentoml build`` on the staging directory. Before building, the encoders that config serves are built
and their fingerprints compared with the ones the artifacts were trained with (encoders/fingerprint.py):
a Bento that would refuse to start is refused at build instead.

``bentoml build`` and ``bentoml serve`` run as subprocesses: the service modules read their config at
import, and the child gets exactly the environment we give it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from encoders.registry import check_config
from tools.bento_models import (PackagingError, exact_model_tag, pin_encoder_weights,  # noqa: F401
                                 pinned_config, plugin_requirements, weights_env)
from mixrec.config import ENV_CONFIG_FILE, HYBRID_MODEL_NAME, REPO_ROOT, MixrecConfig, load_config

BENTOFILE = REPO_ROOT / "bentofile.yaml"
BENTO_CONFIG = "configs/bento.yaml"  # relative to the build context / the Bento's src/
DEFAULT_BUILD_CONFIG = REPO_ROOT / BENTO_CONFIG
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "BENTOML_DO_NOT_TRACK": "true"}


# Base images for the container (docker options of the Bento, frozen at `bentoml build`):
#   public -> BentoML's python:3.11-slim from Docker Hub; the packages come from PyPI during the
#             image build (lightfm-next compiles there, so BentoML's Debian template keeps
#             build-essential in the image). For machines with internet.
#   local  -> LOCAL_BASE_IMAGE, made here by deploy/base-image.sh from Debian packages; every
#             package comes from a wheelhouse mounted read-only at WHEELHOUSE_MOUNT during the
#             build only (`mixrec image build` makes it with pip on the host), so the build needs
#             no network and the image no compiler.
#   any other value -> that image reference, installed like `local` (it needs python3.11 and uv).
BASES = ("public", "local")
LOCAL_BASE_IMAGE = "localhost/mixrec-base:bookworm-py3.11"
WHEELHOUSE_MOUNT = "/wheelhouse"
DOCKERFILE_TEMPLATE = "deploy/Dockerfile.j2"


def bentoml_executable() -> str:
    cand = Path(sys.executable).parent / "bentoml"
    return str(cand) if cand.exists() else "bentoml"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for bentoml subprocesses: ours, offline, plus ``extra``."""
    return {**os.environ, **OFFLINE_ENV, **(extra or {})}


def build_config(config: str | os.PathLike | None = None,
                 environ: Mapping[str, str] | None = None) -> tuple[MixrecConfig, Path]:
    """The config a Bento is built from: ``config``, else $MIXREC_CONFIG, else configs/bento.yaml; plus
    the ``MIXREC__*`` overrides of ``environ`` (default: this process's environment)."""
    env = dict(os.environ if environ is None else environ)
    path = Path(config or env.get(ENV_CONFIG_FILE) or DEFAULT_BUILD_CONFIG)
    return check_config(load_config(path, environ=env), str(path)), path


def store_model_dir(artifacts_dir: Path, labels: Mapping[str, str] | None = None) -> str:
    """Copy a saved HybridModel directory into the model store as ``HYBRID_MODEL_NAME``; returns the tag."""
    from fusion.hybrid import HybridModel

    model = HybridModel.load(artifacts_dir)
    return model.save_to_model_store(HYBRID_MODEL_NAME, labels=dict(labels or {}))


def hybrid_model_tag(cfg: MixrecConfig, model_tag: str | None = None) -> str:
    """The exact hybrid model the Bento carries: ``model_tag``, else ``serving.artifacts`` (a model-store
    tag, resolved to its version now, or a directory, stored now)."""
    if model_tag:
        return exact_model_tag(model_tag)
    ref = cfg.serving.artifacts
    if ref.startswith("bentoml:"):
        return exact_model_tag(ref[len("bentoml:"):])
    if not (Path(ref) / "meta.json").is_file():
        raise PackagingError(f"serving.artifacts {ref!r} is neither bentoml:<tag> nor a trained artifacts directory")
    return exact_model_tag(store_model_dir(Path(ref), labels={"source": str(Path(ref).resolve())}))


def check_model_serves_with(model_tag: str, cfg: MixrecConfig, config_name: str) -> None:
    """Refuse a hybrid model trained with other encoders than the ones ``cfg`` serves (names both sides)."""
    import bentoml

    from encoders.errors import EncoderMismatchError
    from encoders.fingerprint import check_same
    from encoders.registry import configured_fingerprints
    from fusion.artifacts import read_meta

    trained = read_meta(bentoml.models.get(model_tag).path).get("encoders", {})
    try:
        check_same(trained, configured_fingerprints(cfg), have_name=f"the trained model {model_tag}",
                   want_name=f"the encoders {config_name} serves",
                   fix=f"build with the config the model was trained with, or re-encode and retrain with {config_name}")
    except EncoderMismatchError as e:
        raise PackagingError(str(e)) from None


def derived_bentofile(base: str = "public", frozen: Mapping[str, str] | None = None,
                      bentofile: Path = BENTOFILE, out_dir: Path | None = None, *,
                      model_tag: str = f"{HYBRID_MODEL_NAME}:latest", packages: list[str] = (),
                      wheels: list[str] = ()) -> Path:
    """The bentofile to build with: the committed one (code, packages, envs, docker options), plus

    * ``models:`` derived: the hybrid model ``model_tag`` first, then the pinned encoder weights
      ``frozen`` (``{slot: tag}``), with env overrides pointing the encoders at them;
    * ``packages`` / ``wheels`` (paths relative to the build context): the plugin kinds' distributions;
    * for ``base`` other than ``public`` (see BASES): docker options naming that base image, and pip
      installing only from the build-time wheelhouse."""
    spec = yaml.safe_load(bentofile.read_text())
    if base != "public":
        image = LOCAL_BASE_IMAGE if base == "local" else base
        if not image or any(c.isspace() for c in image):
            raise PackagingError(f"--base must be one of {BASES} or an image reference, not {base!r}")
        spec["docker"] = {"base_image": image,
                          "python_version": spec.get("docker", {}).get("python_version", "3.11"),
                          # relative to the build context; makes BentoML render its classic template (see the file)
                          "dockerfile_template": DOCKERFILE_TEMPLATE}
        # uv installs only from the build-time wheelhouse, and keeps no cache in the image
        spec["python"] = {**spec["python"], "no_index": True, "find_links": [WHEELHOUSE_MOUNT],
                          "pip_args": "--no-cache"}
    frozen = dict(frozen or {})
    spec["models"] = [model_tag] + sorted(frozen.values())
    spec["envs"] = list(spec.get("envs", [])) + [{"name": k, "value": v} for k, v in weights_env(frozen).items()]
    if packages or wheels:
        spec["python"] = {**spec["python"], "packages": list(spec["python"].get("packages", [])) + list(packages)}
        if wheels:
            spec["python"]["wheels"] = list(spec["python"].get("wheels", [])) + list(wheels)
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="mixrec-bentofile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "bentofile.yaml"
    out.write_text(f"# Generated by mixrec (packaging.derived_bentofile) from {bentofile}: base {base}, "
                   f"model {model_tag}, pinned encoder weights {frozen}\n" + yaml.safe_dump(spec, sort_keys=False))
    return out


def stage_sources(bentofile: Path, ctx: Path, base: str = "public") -> None:
    """Copy the files the bentofile's ``include`` names (from the installed mixrec tree) into ``ctx``, and for a
    ``base`` other than public the docker template the derived bentofile names (relative to ``ctx``)."""
    spec = yaml.safe_load(bentofile.read_text())
    for pattern in spec.get("include", []):
        for f in REPO_ROOT.glob(pattern):
            if f.is_file() and "__pycache__" not in f.parts:
                dest = ctx / f.relative_to(REPO_ROOT)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
    if base != "public":
        (ctx / DOCKERFILE_TEMPLATE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / DOCKERFILE_TEMPLATE, ctx / DOCKERFILE_TEMPLATE)


@dataclass(frozen=True)
class BuildPlan:
    """What ``bentoml build`` gets: a staged context with its bentofile, and what the Bento will carry."""

    ctx: Path
    bentofile: Path
    model_tag: str
    pinned: dict[str, str]
    config: MixrecConfig  # the served config, as written to <ctx>/configs/bento.yaml


def plan_build(cfg: MixrecConfig, config_name: str, *, model_tag: str | None = None, base: str = "public",
               bentofile: Path = BENTOFILE, build_dir: Path | None = None) -> BuildPlan:
    """Pin everything the config names, check the model serves with its encoders, stage the context."""
    model_tag = hybrid_model_tag(cfg, model_tag)
    pinned = pin_encoder_weights(cfg)
    served = pinned_config(cfg, pinned, model_tag)
    check_model_serves_with(model_tag, served, config_name)
    ctx = Path(build_dir) if build_dir else Path(tempfile.mkdtemp(prefix="mixrec-build-"))
    if ctx.exists() and any(ctx.iterdir()):
        raise PackagingError(f"--build-dir {ctx} is not empty; give a new or empty directory")
    ctx.mkdir(parents=True, exist_ok=True)
    stage_sources(bentofile, ctx, base)
    (ctx / BENTO_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (ctx / BENTO_CONFIG).write_text(
        f"# The config this Bento serves: {config_name} with MIXREC__* overrides applied at build, encoder weights\n"
        "# and the trained model pinned to exact model-store tags (written by `mixrec build`; do not edit).\n"
        + yaml.safe_dump(served.model_dump(mode="json"), sort_keys=False))
    packages, wheels = plugin_requirements(cfg, ctx / "wheels")
    out = derived_bentofile(base, pinned, bentofile, ctx, model_tag=model_tag, packages=packages,
                            wheels=[w.relative_to(ctx).as_posix() for w in wheels])
    return BuildPlan(ctx, out, model_tag, pinned, served)


def build_bento(config: str | os.PathLike | None = None, *, environ: Mapping[str, str] | None = None,
                model_tag: str | None = None, version: str | None = None, base: str = "public",
                bentofile: Path = BENTOFILE, build_dir: Path | None = None, timeout_s: float = 600) -> str:
    """Build a Bento serving ``config`` (see ``build_config``) offline; returns its tag (``mixrec:<version>``).

    ``model_tag`` names the hybrid model (default: the config's ``serving.artifacts``); ``base`` the
    container base (see BASES); ``build_dir`` keeps the staged build context there (default: a temp dir)."""
    cfg, path = build_config(config, environ)
    plan = plan_build(cfg, str(path), model_tag=model_tag, base=base, bentofile=bentofile, build_dir=build_dir)
    cmd = [bentoml_executable(), "build", "-f", str(plan.bentofile), "--output", "tag", str(plan.ctx)]
    if version:
        cmd += ["--version", version]
    proc = subprocess.run(cmd, cwd=str(plan.ctx), env=child_env({ENV_CONFIG_FILE: BENTO_CONFIG}),
                          capture_output=True, text=True, timeout=timeout_s)
    tags = [line.split("__tag__:", 1)[1].strip() for line in proc.stdout.splitlines() if "__tag__:" in line]
    if proc.returncode != 0 or not tags:
        raise PackagingError(f"bentoml build failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
                             f"\n{proc.stderr[-3000:]}")
    if build_dir is None:
        shutil.rmtree(plan.ctx, ignore_errors=True)
    return tags[-1]


def bento_path(tag: str) -> Path:
    import bentoml

    return Path(bentoml.get(tag).path)


def bento_models(tag: str) -> list[str]:
    """Exact model-store tags packaged in a built Bento (the hybrid model first)."""
    import bentoml

    tags = [str(m.tag) for m in bentoml.get(tag).info.models]
    return sorted(tags, key=lambda t: not t.startswith(HYBRID_MODEL_NAME + ":"))


def serve_env(tag: str, model_tag: str, state_dir: Path) -> dict[str, str]:
    """Environment for serving the built Bento locally: its own config, the exact model, state on disk.

    ``bentoml serve`` outside a container does not apply the bentofile's ``envs``, so they are
    set here; the model tag is pinned so that a newer model in the store is not picked up.
    """
    state_dir = state_dir.resolve()
    return {
        **bento_encoder_envs(tag),
        "MIXREC_CONFIG": str(bento_path(tag) / "src" / BENTO_CONFIG),
        "MIXREC__SERVING__ARTIFACTS": f"bentoml:{model_tag}",
        "MIXREC__SERVING__STATE_DIR": str(state_dir / "model"),
        "MIXREC__STORAGE__URL": f"sqlite:///{state_dir / 'mixrec.db'}",
        "MIXREC__STORAGE__MEDIA_DIR": str(state_dir / "media"),
    }


def bento_encoder_envs(tag: str) -> dict[str, str]:
    """The Bento's ``MIXREC__ENCODERS__*`` envs (frozen encoder weights), for serving it outside a container."""
    import bentoml

    return {e.name: e.value for e in (bentoml.get(tag).info.envs or [])
            if e.name.startswith("MIXREC__ENCODERS__") and e.value is not None}


def serve_command(tag: str, port: int, host: str = "127.0.0.1") -> list[str]:
    return [bentoml_executable(), "serve", tag, "--host", host, "--port", str(port)]
