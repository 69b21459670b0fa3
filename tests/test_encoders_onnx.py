"""options.runtime: onnx — the same weights through ONNX Runtime: equal vectors, same identity, cached exports."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import audio_bytes, encoder_config, image_bytes
from encoders.errors import EncoderConfigError
from encoders.fingerprint import fingerprint, mismatches
from encoders.registry import build_encoder

pytest.importorskip("onnxruntime")

# ORT vs torch on unit-norm rows: the bound the README states (the fingerprint's float32 probe tolerance is 1e-4)
TOLERANCE = 2e-5
TEXTS = ["red running shoes", "a calm piano piece for a quiet evening at home with friends", "whales",
         "noise-cancelling headphones"]
CASES = {
    "text": ("hf-text", "mixrec-tiny-bert", lambda: TEXTS),
    "image": ("open-clip", "mixrec-tiny-clip", lambda: [image_bytes(), image_bytes((10, 200, 90), (64, 30))]),
    "clap": ("hf-audio", "mixrec-tiny-clap", lambda: [audio_bytes(), audio_bytes(300.0, seconds=2.0)]),
    "ast": ("hf-audio", "mixrec-tiny-ast", lambda: [audio_bytes(), audio_bytes(300.0, seconds=2.0)]),
}


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXREC_ONNX_CACHE", str(tmp_path / "onnx"))
    return tmp_path / "onnx"


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_runtime_gives_the_torch_vectors_and_the_same_identity(case):
    kind, model, inputs = CASES[case]
    torch_enc = build_encoder(encoder_config(kind, model, seed=3))
    ort_enc = build_encoder(encoder_config(kind, model, seed=3, options={"runtime": "onnx"}))
    assert (torch_enc.describe()["runtime"], ort_enc.describe()["runtime"]) == ("torch", "onnx")
    assert ort_enc.onnx is not None and torch_enc.onnx is None
    a, b = torch_enc.encode(inputs()), ort_enc.encode(inputs())
    assert a.shape == b.shape and b.dtype == np.float32
    assert np.abs(a - b).max() <= TOLERANCE
    # the runtime is not part of the identity: a model trained on torch vectors is served by ORT without a retrain
    fa, fb = fingerprint(torch_enc), fingerprint(ort_enc)
    assert fa["digest"] == fb["digest"]
    assert mismatches(fa, fb) == []


def test_exports_are_cached_by_the_weights(onnx_cache):
    build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", seed=3, options={"runtime": "onnx"}))
    first = {p.name: p.stat().st_mtime_ns for p in onnx_cache.glob("*.onnx")}
    assert len(first) == 1
    again = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", seed=3, options={"runtime": "onnx"}))
    assert {p.name: p.stat().st_mtime_ns for p in onnx_cache.glob("*.onnx")} == first  # reused, not re-exported
    assert again.onnx.path.name in first
    other = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", seed=4, options={"runtime": "onnx"}))
    assert other.onnx.path.name not in first  # other weights: another export, never the stale graph
    cls_ = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", seed=3,
                                        options={"runtime": "onnx", "pooling": "cls"}))
    assert len({again.onnx.path, other.onnx.path, cls_.onnx.path}) == 3


def test_an_export_that_gives_other_vectors_is_refused(onnx_cache):
    good = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", seed=3, options={"runtime": "onnx"}))
    other = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", seed=4, options={"runtime": "onnx"}))
    good.onnx.path.write_bytes(other.onnx.path.read_bytes())  # a cache entry that no longer matches its weights
    with pytest.raises(EncoderConfigError, match="away from torch"):
        build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", seed=3, options={"runtime": "onnx"}))


@pytest.mark.parametrize("kind,model", [(k, m) for k, m, _ in CASES.values()][:3])
def test_runtime_option_is_validated(kind, model):
    with pytest.raises(EncoderConfigError, match="options.runtime must be one of"):
        build_encoder(encoder_config(kind, model, options={"runtime": "tensorrt"}))
    with pytest.raises(EncoderConfigError, match="runs on the CPU"):
        build_encoder(encoder_config(kind, model).model_copy(update={"device": "cuda",
                                                                     "options": {"runtime": "onnx"}}))

