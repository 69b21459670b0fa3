"""What a Bento carries besides code, derived from the config it is built with.

* encoder weights, pinned: ``random`` weights are frozen into the model store, a local directory is
  imported into it (``<model>:<content hash>``, reused when identical), ``bentoml:name`` is resolved to the
  exact version in the store now — so the Bento names exact model-store tags and a version imported later
  cannot change what it serves. Package, hub and pretrained-tag weights stay as configured.
* the trained hybrid model: an exact ``mixrec-hybrid:<version>``.
* third-party encoder kinds: the distribution that provides each kind's entry point, as a requirement (or,
  when it was installed from a local directory, as a wheel built now and shipped inside the Bento).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping

from mixrec.config import HYBRID_MODEL_NAME, MODALITIES, MixrecConfig


class PackagingError(RuntimeError):
    """The Bento cannot be built or served as asked; the message says why and what to do."""


def _digest_dir(d: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        h.update(f.relative_to(d).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:20]


def _store_name(model: str) -> str:
    """A model-store name from an encoder's ``model`` (lowercase letters, digits, - _ .)."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", model.lower()).strip("-._")
    return name or "encoder"


def _store_dir(directory: Path, name: str, labels: dict[str, str], made_by: str) -> str:
    """``name:<content hash>`` in the model store holding a copy of ``directory`` (reused when present)."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag = f"{name}:{_digest_dir(directory)}"
    try:
        bentoml.models.get(tag)
    except NotFound:
        with bentoml.models.create(tag, labels=labels, metadata={"made_by": made_by}) as ref:
            shutil.copytree(directory, ref.path, dirs_exist_ok=True)
    return tag


def _freeze_random(slot: str, cfg: MixrecConfig) -> str:
    """Untrained weights made exactly as training made them (same config, seed, this torch), saved with
    probe vectors (encoders/fingerprint.py) and stored; loading them back must reproduce the probe."""
    from encoders.fingerprint import write_probe
    from encoders.registry import build_encoder

    ecfg = getattr(cfg.encoders, slot).model_copy(update={"device": "cpu", "fp16": False})
    enc = build_encoder(ecfg, cfg.limits)
    with tempfile.TemporaryDirectory(prefix=f"mixrec-{slot}-weights-") as tmp:
        d = Path(tmp) / "w"
        enc.save(d)
        write_probe(d, enc)
        labels = {"mixrec.kind": ecfg.kind, "mixrec.model": ecfg.model, "mixrec.trained": "false",
                  "mixrec.frozen_from": f"random seed {ecfg.seed}"}
        return _store_dir(d, ecfg.model, labels, "tools.bento_models.freeze")


def _import_local(slot: str, cfg: MixrecConfig, path: Path) -> str:
    from encoders.weights import read_marker

    ecfg = getattr(cfg.encoders, slot)
    if not path.is_dir():
        raise PackagingError(f"encoders.{slot}.weights is a local file ({path}); a Bento carries weight "
                             "directories only: save the encoder as a directory (open_clip local-dir or "
                             "save_pretrained layout) and point weights at it")
    trained = read_marker(path).get("trained")
    labels = {"mixrec.kind": ecfg.kind, "mixrec.model": ecfg.model, "source": str(path),
              "mixrec.trained": "unknown" if trained is None else str(bool(trained)).lower()}
    return _store_dir(path, _store_name(ecfg.model), labels, "tools.bento_models.import_local")


def exact_model_tag(tag: str) -> str:
    """``name`` or ``name:latest`` -> ``name:<version>`` as the model store holds it now."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return str(bentoml.models.get(tag).tag)
    except (NotFound, ValueError):
        raise PackagingError(f"model {tag!r} is not in the BentoML model store; import it with "
                             "`mixrec models import` (encoder weights) or train it (`mixrec train --model-store`)") from None


def pin_encoder_weights(cfg: MixrecConfig) -> dict[str, str]:
    """``{slot: exact model-store tag}`` for every encoder whose weights must travel in the Bento."""
    from encoders.weights import resolve_weights

    pinned: dict[str, str] = {}
    for slot in MODALITIES:
        ecfg = getattr(cfg.encoders, slot)
        w = (ecfg.weights or "").strip()
        if w == "random":
            pinned[slot] = _freeze_random(slot, cfg)
        elif w.startswith("bentoml:"):
            pinned[slot] = exact_model_tag(w[len("bentoml:"):])
        elif w:
            source = resolve_weights(w, ecfg.model)
            if source.kind == "local":
                pinned[slot] = _import_local(slot, cfg, source.path)
    return pinned


def pinned_config(cfg: MixrecConfig, pinned: Mapping[str, str], model_tag: str) -> MixrecConfig:
    """The config the Bento serves: encoder weights and the hybrid model as exact model-store tags."""
    encoders = cfg.encoders.model_copy(update={
        slot: getattr(cfg.encoders, slot).model_copy(update={"weights": f"bentoml:{tag}"})
        for slot, tag in pinned.items()})
    serving = cfg.serving.model_copy(update={"artifacts": f"bentoml:{model_tag}"})
    return cfg.model_copy(update={"encoders": encoders, "serving": serving})


def weights_env(pinned: Mapping[str, str]) -> dict[str, str]:
    """Config overrides naming the pinned weights (also in the Bento's envs, where `bentoml get` shows them)."""
    return {f"MIXREC__ENCODERS__{slot.upper()}__WEIGHTS": f"bentoml:{tag}" for slot, tag in pinned.items()}


# ------------------------------------------------------------------------------------------ plugin kinds
def plugin_distributions(cfg: MixrecConfig) -> dict[str, object]:
    """``{kind: importlib.metadata.Distribution}`` for every configured kind that comes from an entry point."""
    from encoders.registry import kind_distribution

    out = {}
    for slot in MODALITIES:
        kind = getattr(cfg.encoders, slot).kind
        dist = kind_distribution(kind)
        if dist is not None:
            out[kind] = dist
    return out


def _local_source(dist) -> Path | None:
    """The directory a distribution was installed from (PEP 610 direct_url.json), if any."""
    raw = dist.read_text("direct_url.json")
    if not raw:
        return None
    info = json.loads(raw)
    url = info.get("url", "")
    if "dir_info" in info and url.startswith("file://"):
        return Path(url[len("file://"):])
    return None


def plugin_requirements(cfg: MixrecConfig, wheel_dir: Path) -> tuple[list[str], list[Path]]:
    """(requirements, wheels) that install the plugin kinds' distributions in the Bento's environment."""
    reqs, wheels = [], []
    for kind, dist in sorted(plugin_distributions(cfg).items()):
        name, version = dist.metadata["Name"], dist.version
        src = _local_source(dist)
        if src is None:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")
            reqs.append(f"{name} @ {direct['url']}" if direct.get("url") else f"{name}=={version}")
            continue
        wheels.append(build_wheel(src, wheel_dir, f"encoder kind {kind!r}"))
    return reqs, wheels


def build_wheel(src: Path, out_dir: Path, what: str) -> Path:
    """A wheel of the project in ``src`` (no dependencies, no network: the build backend must be installed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("*.whl"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out_dir), str(src)], capture_output=True, text=True, timeout=300)
    made = sorted(set(out_dir.glob("*.whl")) - before) or sorted(out_dir.glob("*.whl"))
    if proc.returncode != 0 or not made:
        raise PackagingError(f"cannot build a wheel of {src} ({what}) for the Bento:\n{proc.stderr[-2000:]}")
    return made[-1]
