"""Ship trained artifacts as one Bento: model store, ``bentoml build``, ``bentoml serve``.

The Bento runs with ``configs/bento.yaml`` (bentofile.yaml sets MIXREC_CONFIG). The
trained model only works with the encoders it was trained with, so the build refuses
artifacts whose encoders differ from that config's instead of shipping a Bento that
fails at start-up.

``bentoml build`` and ``bentoml serve`` run as subprocesses: the service modules read
their config at import, and the child gets exactly the environment we give it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

import yaml

from encoders.registry import check_config
from mixrec.config import HYBRID_MODEL_NAME, REPO_ROOT, MixrecConfig, load_config

BENTOFILE = REPO_ROOT / "bentofile.yaml"
BENTO_CONFIG = "configs/bento.yaml"  # relative to the build context / the Bento's src/
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


class PackagingError(RuntimeError):
    """The Bento cannot be built or served as asked; the message says why and what to do."""


def bentoml_executable() -> str:
    cand = Path(sys.executable).parent / "bentoml"
    return str(cand) if cand.exists() else "bentoml"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for bentoml subprocesses: ours, offline, plus ``extra``."""
    return {**os.environ, **OFFLINE_ENV, **(extra or {})}


def check_bento_config(train_cfg: MixrecConfig, build_ctx: Path = REPO_ROOT) -> MixrecConfig:
    """Load the Bento's config and check it can serve artifacts trained with ``train_cfg``."""
    bento_cfg = check_config(load_config(build_ctx / BENTO_CONFIG, environ={}), BENTO_CONFIG)
    for slot in ("text", "image", "audio"):
        have = getattr(train_cfg.encoders, slot)
        want = getattr(bento_cfg.encoders, slot)
        if (have.kind, have.model, have.weights, have.seed, have.options) != \
                (want.kind, want.model, want.weights, want.seed, want.options):
            raise PackagingError(
                f"the Bento serves with {BENTO_CONFIG}, whose {slot} encoder ({want.kind}:{want.model}, weights "
                f"{want.weights}) differs from the one the artifacts were trained with ({have.kind}:{have.model}, "
                f"weights {have.weights}); train with the same encoders or edit {BENTO_CONFIG}")
    return bento_cfg


def bento_model_tags(bento_cfg: MixrecConfig, bentofile: Path = BENTOFILE) -> list[str]:
    """Model-store tags the Bento needs: the hybrid model plus any ``bentoml:`` encoder weights.

    Encoder weights must be listed in bentofile.yaml ``models:`` to be packaged; a missing
    entry is reported here rather than as a start-up failure of the deployed Bento.
    """
    listed = [m if isinstance(m, str) else m["tag"] for m in yaml.safe_load(bentofile.read_text()).get("models", [])]
    listed_names = {t.split(":")[0] for t in listed}
    needed = [w[len("bentoml:"):] for w in (getattr(bento_cfg.encoders, s).weights for s in ("text", "image", "audio"))
              if w and w.startswith("bentoml:")]
    missing = [t for t in needed if t.split(":")[0] not in listed_names]
    if missing:
        raise PackagingError(f"{BENTO_CONFIG} loads encoder weights {missing} from the model store, but "
                             f"{bentofile.name} does not package them: add them under `models:`")
    return listed


def check_models_present(tags: list[str]) -> None:
    import bentoml
    from bentoml.exceptions import NotFound

    for tag in tags:
        try:
            bentoml.models.get(tag)
        except NotFound:
            raise PackagingError(f"model {tag!r} is not in the BentoML model store "
                                 f"({os.environ.get('BENTOML_HOME', '~/bentoml')}); run `mixrec demo` or "
                                 "`mixrec models import` first") from None


def store_model_dir(artifacts_dir: Path, labels: Mapping[str, str] | None = None) -> str:
    """Copy a saved HybridModel directory into the model store as ``HYBRID_MODEL_NAME``; returns the tag."""
    from fusion.hybrid import HybridModel

    model = HybridModel.load(artifacts_dir)
    return model.save_to_model_store(HYBRID_MODEL_NAME, labels=dict(labels or {}))


def freeze_random_encoders(bento_cfg: MixrecConfig) -> dict[str, str]:
    """Put the untrained (``weights: random``) encoders' weights into the model store, once.

    The weights are made exactly as training made them (same config, same seed, this
    machine's torch), saved in the encoder's own layout with probe vectors
    (encoders/fingerprint.py), stored as ``<model>:<content hash>`` (an existing identical
    version is reused) and loaded back through the model-store path, which must reproduce
    the probe. The Bento then carries these files instead of re-initialising from the seed
    on another machine or torch build. Returns ``{slot: model-store tag}``.
    """
    import hashlib
    import shutil
    import tempfile

    import bentoml
    from bentoml.exceptions import NotFound

    from encoders.fingerprint import write_probe
    from encoders.registry import build_encoder
    from encoders.weights import read_marker

    frozen: dict[str, str] = {}
    for slot in ("text", "image", "audio"):
        ecfg = getattr(bento_cfg.encoders, slot)
        if ecfg.weights != "random":
            continue
        # made on CPU in float32: the precision the probe is recorded in
        cpu_cfg = ecfg.model_copy(update={"device": "cpu", "fp16": False})
        enc = build_encoder(cpu_cfg, bento_cfg.limits)
        with tempfile.TemporaryDirectory(prefix=f"mixrec-{slot}-weights-") as tmp:
            d = Path(tmp) / "w"
            enc.save(d)
            write_probe(d, enc)
            digest = hashlib.sha256()
            for f in sorted(p for p in d.rglob("*") if p.is_file()):
                digest.update(f.relative_to(d).as_posix().encode() + b"\0" + f.read_bytes())
            tag = f"{ecfg.model}:{digest.hexdigest()[:20]}"
            try:
                bentoml.models.get(tag)
            except NotFound:
                labels = {"mixrec.kind": ecfg.kind, "mixrec.model": ecfg.model, "mixrec.trained": "false",
                          "mixrec.frozen_from": f"random seed {ecfg.seed}"}
                assert read_marker(d).get("trained") is False
                with bentoml.models.create(tag, labels=labels,
                                           metadata={"made_by": "tools.packaging.freeze_random_encoders"}) as ref:
                    shutil.copytree(d, ref.path, dirs_exist_ok=True)
        # loading it back through the model store re-checks the probe (encoders.registry.build_encoder)
        build_encoder(cpu_cfg.model_copy(update={"weights": f"bentoml:{tag}"}), bento_cfg.limits)
        frozen[slot] = tag
    return frozen


def weights_env(frozen: Mapping[str, str]) -> dict[str, str]:
    """Config overrides that make the encoder services load the frozen weights."""
    return {f"MIXREC__ENCODERS__{slot.upper()}__WEIGHTS": f"bentoml:{tag}" for slot, tag in frozen.items()}


def derived_bentofile(base: str = "public", frozen: Mapping[str, str] | None = None,
                      bentofile: Path = BENTOFILE, out_dir: Path | None = None) -> Path:
    """The bentofile to build with: the committed one, plus

    * for ``base`` other than ``public`` (see BASES): docker options naming that base image,
      and pip installing only from the build-time wheelhouse;
    * for ``frozen`` encoder weights: those model-store tags under ``models:`` and env
      overrides pointing the encoders at them.

    Packages, include/exclude and the other envs are the committed file's."""
    if base == "public" and not frozen:
        return bentofile
    import tempfile

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
    if frozen:
        spec["models"] = list(spec.get("models", [])) + sorted(frozen.values())
        spec["envs"] = list(spec.get("envs", [])) + [{"name": k, "value": v} for k, v in weights_env(frozen).items()]
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="mixrec-bentofile-"))
    out = out_dir / "bentofile.yaml"
    out.write_text(f"# Generated by mixrec (packaging.derived_bentofile) from {bentofile.name}: base {base}, "
                   f"frozen encoder weights {dict(frozen or {})}\n" + yaml.safe_dump(spec, sort_keys=False))
    return out


def build_bento(build_ctx: Path = REPO_ROOT, bentofile: Path = BENTOFILE, version: str | None = None,
                env: Mapping[str, str] | None = None, timeout_s: float = 600, base: str = "public") -> str:
    """Run ``bentoml build`` offline; returns the new Bento's tag (``mixrec:<version>``).

    ``base`` picks the container base image the Bento is built for (see BASES). Untrained
    encoders travel as frozen weights (``freeze_random_encoders``)."""
    bento_cfg = load_config(build_ctx / BENTO_CONFIG, environ={})
    bentofile = derived_bentofile(base, freeze_random_encoders(bento_cfg), bentofile)
    cmd = [bentoml_executable(), "build", "-f", str(bentofile), "--output", "tag", str(build_ctx)]
    if version:
        cmd += ["--version", version]
    proc = subprocess.run(cmd, cwd=str(build_ctx), env=child_env({"MIXREC_CONFIG": BENTO_CONFIG, **(env or {})}),
                          capture_output=True, text=True, timeout=timeout_s)
    tags = [line.split("__tag__:", 1)[1].strip() for line in proc.stdout.splitlines() if "__tag__:" in line]
    if proc.returncode != 0 or not tags:
        raise PackagingError(f"bentoml build failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
                             f"\n{proc.stderr[-3000:]}")
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


def check_artifacts_match(artifacts_dir: Path, bento_cfg: MixrecConfig) -> None:
    """Refuse a saved model whose encoders are not the ones the Bento will run."""
    from fusion.artifacts import read_meta

    saved = read_meta(artifacts_dir).get("encoders", {})
    for slot in ("text", "image", "audio"):
        want = getattr(bento_cfg.encoders, slot)
        have = saved.get(slot)
        if have is None:
            continue
        if (str(have.get("kind")), str(have.get("model")), str(have.get("weights"))) != \
                (want.kind, want.model, str(want.weights)):
            raise PackagingError(
                f"{artifacts_dir} was trained with {slot} encoder {have.get('kind')}:{have.get('model')} "
                f"(weights {have.get('weights')}), but {BENTO_CONFIG} runs {want.kind}:{want.model} "
                f"(weights {want.weights}); retrain or edit {BENTO_CONFIG}")
