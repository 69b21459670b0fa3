"""Per-process settings for the services: the mixrec config, read once at import.

Service decorators (resources, batching) need their values at import time, so
the config is loaded here from ``MIXREC_CONFIG`` (default configs/offline.yaml)
plus ``MIXREC__...`` environment overrides. Loading it imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from encoders.registry import check_config
from mixrec.config import REPO_ROOT, EncoderServingConfig, MixrecConfig, load_config


def _find_config() -> Path | None:
    explicit = os.environ.get("MIXREC_CONFIG")
    if explicit:
        return Path(explicit)
    cwd = Path.cwd()
    if cwd.name == "src" and (cwd.parent / "bento.yaml").exists() and (cwd / "configs" / "bento.yaml").exists():
        return cwd / "configs" / "bento.yaml"  # serving a built Bento outside its container
    # Inside a built Bento the source lives in src/ and configs/ came along via `include`.
    for root in (Path.cwd(), REPO_ROOT):
        cand = root / "configs" / "offline.yaml"
        if cand.exists():
            return cand
    return None


# The registry, not the config schema, knows the encoder kinds: a bad kind fails here, at start.
CONFIG: MixrecConfig = check_config(load_config(_find_config()))


def encoder_service_options(slot: str) -> dict[str, Any]:
    """Keyword arguments for ``@bentoml.service`` of the encoder in ``slot``."""
    sc: EncoderServingConfig = getattr(CONFIG.serving, f"{slot}_encoder")
    opts: dict[str, Any] = {
        "name": f"{slot.capitalize()}Encoder",
        "workers": sc.workers,
        "traffic": {"timeout": sc.timeout_s},
    }
    if sc.gpu > 0:
        opts["resources"] = {"gpu": sc.gpu}
    return opts


def batching(slot: str) -> dict[str, Any]:
    sc: EncoderServingConfig = getattr(CONFIG.serving, f"{slot}_encoder")
    return {"batchable": True, "max_batch_size": sc.max_batch_size, "max_latency_ms": sc.max_latency_ms}
