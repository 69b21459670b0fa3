"""Builds encoders from config by kind; third parties add kinds through entry points.

A package registers a kind with, in its pyproject.toml::

    [project.entry-points."mixrec.encoders"]
    my-kind = "my_pkg.encoders:MyEncoder"

where ``MyEncoder`` subclasses ``encoders.base.Encoder``, sets ``modality`` and
has a ``from_config(cfg: EncoderConfig, limits: LimitsConfig | None)`` classmethod.
In-process code can call ``register_encoder("my-kind")`` as a decorator instead. ``mixrec build`` adds
the distribution that provides an entry-point kind to the Bento's Python packages (README "Write an
encoder kind"; a complete example package is examples/encoder-plugin/).

The config schema (``mixrec.config``) only knows that ``kind`` is a string: this registry is the
one authority on which kinds exist and which modality each serves (``check_config``), so the
base layer never imports upward.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable, Iterable

from encoders.errors import EncoderConfigError
from encoders.fingerprint import check_probe, describe_with_fingerprint
from mixrec.config import MODALITIES, ConfigError, EncoderConfig, LimitsConfig, MixrecConfig

if TYPE_CHECKING:
    from encoders.base import Encoder

ENTRY_POINT_GROUP = "mixrec.encoders"

# Built-in kinds -> "module:Class", imported lazily so that loading a config
# does not import torch.
_BUILTIN: dict[str, tuple[str, str]] = {
    "hf-text": ("text", "encoders.text:HFTextEncoder"),
    "open-clip": ("image", "encoders.image:OpenCLIPImageEncoder"),
    "hf-audio": ("audio", "encoders.audio:HFAudioEncoder"),
}
_REGISTERED: dict[str, type] = {}


def register_encoder(kind: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _REGISTERED[kind] = cls
        return cls
    return deco


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_kinds() -> set[str]:
    return set(_BUILTIN) | set(_REGISTERED) | set(_entry_points())


def _load_class(kind: str) -> type:
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    if kind in _BUILTIN:
        mod, _, name = _BUILTIN[kind][1].partition(":")
        return getattr(importlib.import_module(mod), name)
    eps = _entry_points()
    if kind in eps:
        cls = eps[kind].load()
        _REGISTERED[kind] = cls
        return cls
    raise EncoderConfigError(f"unknown encoder kind {kind!r}; known kinds: {sorted(available_kinds())}")


def kind_distribution(kind: str):
    """The installed distribution (``importlib.metadata.Distribution``) whose entry point provides ``kind``;
    None for built-in and in-process kinds. Packaging adds it to the Bento's Python packages."""
    if kind in _BUILTIN:
        return None
    ep = _entry_points().get(kind)
    return getattr(ep, "dist", None) if ep is not None else None


def kind_modality(kind: str) -> str:
    if kind in _BUILTIN:
        return _BUILTIN[kind][0]
    return _load_class(kind).modality


def check_config(cfg: MixrecConfig, source: str = "config") -> MixrecConfig:
    """Every encoder slot names a known kind of its own modality, else ``ConfigError`` naming the field.

    Called where a config is put to use (the services' settings, catalog encoding, the Bento
    build); no encoder is built and no torch imported.
    """
    problems = []
    for slot in MODALITIES:
        kind = getattr(cfg.encoders, slot).kind
        if kind not in available_kinds():
            problems.append(f"encoders.{slot}.kind: unknown encoder kind {kind!r}; "
                            f"known kinds: {sorted(available_kinds())}")
        elif (modality := kind_modality(kind)) != slot:
            problems.append(f"encoders.{slot}.kind: {kind!r} is a {modality} encoder, not a {slot} encoder")
    if problems:
        raise ConfigError("\n  ".join([f"invalid mixrec config ({source}):", *problems]))
    return cfg


def build_encoder(cfg: EncoderConfig, limits: LimitsConfig | None = None) -> "Encoder":
    cls = _load_class(cfg.kind)
    enc = cls.from_config(cfg, limits)
    if cfg.expected_dim is not None and enc.dim != cfg.expected_dim:
        raise EncoderConfigError(
            f"encoder {cfg.kind}:{cfg.model} produces dim {enc.dim}, config expected_dim is {cfg.expected_dim}")
    source = getattr(enc, "source", None)
    if source is not None and source.is_dir:  # saved weights carrying probe vectors must reproduce them
        check_probe(source.path, enc, where=source.ref)
    return enc


def configured_fingerprints(cfg, slots: Iterable[str] = ("text", "image", "audio")) -> dict[str, dict]:
    """describe() + fingerprint of the encoders a MixrecConfig names, built here on the CPU in float32
    (as training builds them; the probe tolerance covers a GPU in float16)."""
    out = {}
    for slot in slots:
        ecfg = getattr(cfg.encoders, slot).model_copy(update={"device": "cpu", "fp16": False})
        out[slot] = describe_with_fingerprint(build_encoder(ecfg, cfg.limits))
    return out
