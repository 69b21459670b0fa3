"""The library's config: a file (or the offline default) plus keyword overrides, and no environment.

``mixrec train`` and the service lay ``MIXREC__*`` environment variables over the file; a library call
must not change behaviour because of a variable someone exported in a shell, so the file is read with an
empty environment (``load_config(path, environ={})``) and only the caller's keywords are applied.

Keywords name a field of the ``model`` or ``fusion`` section (``no_components=64``, ``epochs=10``,
``codebook_size=32``); ``section__field`` names any field of any section (``fusion__seed=3``,
``encoders__text__batch_size=64``), and is required where a name is in both sections (``seed``).
The pydantic models validate the result; ``ConfigError`` names the bad field.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

from mixrec.config import ConfigError, FusionConfig, MixrecConfig, ModelConfig, config_from_dict, load_config

# Sections whose fields may be named bare: the training knobs.
SHORT_SECTIONS = {"model": ModelConfig, "fusion": FusionConfig}


def _short_names() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for section, model in SHORT_SECTIONS.items():
        for f in model.model_fields:
            names.setdefault(f, []).append(section)
    return names


def _path(key: str) -> list[str]:
    if "__" in key:
        return [p for p in key.split("__") if p]
    sections = _short_names().get(key)
    if sections is None:
        close = difflib.get_close_matches(key, list(_short_names()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown setting {key!r}: name a field of model or fusion "
                          f"({', '.join(sorted(_short_names()))}) or use section__field{hint}")
    if len(sections) > 1:
        raise ConfigError(f"setting {key!r} is ambiguous: it is a field of {' and '.join(sections)}; "
                          f"write {' or '.join(s + '__' + key for s in sections)}")
    return [sections[0], key]


def resolve_config(config: MixrecConfig | str | os.PathLike | None = None, **overrides: Any) -> MixrecConfig:
    """``config`` (a ``MixrecConfig``, a YAML path, or None for configs/offline.yaml) with ``overrides``
    applied and validated. No environment variable is read."""
    base = config if isinstance(config, MixrecConfig) else load_config(config, environ={})
    if not overrides:
        return base
    data = base.model_dump()
    for key, value in overrides.items():
        path = _path(key)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown setting {key!r}: {part!r} is not a config section")
            node = node[part]
        node[path[-1]] = value
    return config_from_dict(data, source=f"overrides {sorted(overrides)}", environ={})
