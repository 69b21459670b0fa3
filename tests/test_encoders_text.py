"""hf-text: real MiniLM quality, tiny-model round trips (local dir + model store), bad input."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import encoder_config
from encoders.errors import EncoderConfigError, InvalidMediaError
from encoders.registry import build_encoder
from mixrec.config import DEFAULT_CONFIG, EncoderConfig, LimitsConfig

TEXTS = ["red running shoes", "a calm piano piece", "documentary about whales", "noise-cancelling headphones"]


@pytest.fixture(scope="module")
def minilm():
    section = yaml.safe_load(DEFAULT_CONFIG.read_text())["encoders"]["text"]
    return build_encoder(EncoderConfig(**section))


@pytest.fixture(scope="module")
def tiny(tiny_model_dirs):
    return build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", f"local:{tiny_model_dirs['text']}"),
                         LimitsConfig(max_text_chars=200))


def check_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_minilm_paraphrases_score_closer_than_unrelated(minilm):
    v = minilm.encode(["A man is playing a guitar.", "Someone plays an acoustic guitar.",
                       "The central bank raised interest rates."])
    check_rows(v, 3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    d = minilm.describe()
    assert (d["kind"], d["dim"], d["trained"], d["dtype"]) == ("hf-text", 384, True, "float32")


def test_tiny_text_loaded_from_local_dir(tiny):
    v = tiny.encode(TEXTS)
    check_rows(v, len(TEXTS), 32)
    np.testing.assert_array_equal(v, tiny.encode(TEXTS))  # deterministic
    singles = np.concatenate([tiny.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(v, singles, atol=1e-5)  # padding in a batch changes nothing
    assert not np.allclose(v[0], v[1])
    d = tiny.describe()
    assert d["trained"] is False  # saved from random weights: the marker survives the round trip
    assert d["weights"].startswith("local:") and d["device"] == "cpu"


def test_tiny_text_loaded_from_bentoml_model_store(tiny, tiny_model_dirs, bentoml_home):
    from tools.cli.models import import_model

    tag = import_model(tiny_model_dirs["text"], "tiny-text", "hf-text")
    enc = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", f"bentoml:{tag}"))
    np.testing.assert_allclose(enc.encode(TEXTS), tiny.encode(TEXTS), atol=1e-6)
    assert enc.describe()["weights"] == f"bentoml:{tag}"
    latest = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", "bentoml:tiny-text"))
    assert latest.dim == 32


def test_missing_model_store_tag_is_a_config_error(bentoml_home):
    with pytest.raises(EncoderConfigError, match="no-such-model"):
        build_encoder(encoder_config("hf-text", "x", "bentoml:no-such-model:v1"))


def test_swapping_options_and_model_by_config(tiny_model_dirs, minilm):
    weights = f"local:{tiny_model_dirs['text']}"
    mean = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", weights, options={"pooling": "mean"}))
    cls_ = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", weights, options={"pooling": "cls"}))
    assert not np.allclose(mean.encode(TEXTS), cls_.encode(TEXTS))
    assert cls_.describe()["pooling"] == "cls"
    assert (mean.dim, minilm.dim) == (32, 384)


def test_truncation_to_max_length(tiny_model_dirs):
    enc = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", f"local:{tiny_model_dirs['text']}",
                                       options={"max_length": 8}))
    long_a = "shoes " * 50
    long_b = "shoes " * 6 + "whales " * 44  # differs only after the 8-token window
    v = enc.encode([long_a, long_b])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)


@pytest.mark.parametrize("bad, reason", [
    ("", "empty"), ("   \n\t", "empty"), (123, "expected a string"), (None, "expected a string"),
    (b"bytes", "expected a string"), ("x" * 201, "limit is 200"),
])
def test_bad_text_names_index_and_next_call_works(tiny, bad, reason):
    with pytest.raises(InvalidMediaError) as err:
        tiny.encode(["fine", bad, "also fine"])
    assert (err.value.modality, err.value.index) == ("text", 1)
    assert reason in err.value.reason and "batch index 1" in str(err.value)
    check_rows(tiny.encode(["fine"]), 1, 32)


def test_a_string_is_not_a_batch(tiny):
    with pytest.raises(InvalidMediaError, match="must be a list"):
        tiny.encode("not a list")
    assert tiny.encode([]).shape == (0, 32)


def test_random_weights_need_a_shipped_architecture():
    with pytest.raises(EncoderConfigError, match="mixrec-tiny-bert"):
        build_encoder(encoder_config("hf-text", "bert-base-uncased", "random"))


def test_unknown_option_is_named():
    with pytest.raises(EncoderConfigError, match="poolng"):
        build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", "random", options={"poolng": "cls"}))


def test_long_batches_run_in_length_sorted_chunks(tiny):
    """Chunks are formed after sorting by token length, so each is padded to its own longest text (not
    the request's), and rows still come back in input order, equal to encoding each text alone."""
    texts = [("word " * (30 if i % 2 else 2)).strip() + f" {i}" for i in range(3 * tiny.batch_size)]
    fed: list[tuple[int, int]] = []
    hook = tiny.model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        v = tiny.encode(texts)
    finally:
        hook.remove()
    lengths = [len(ids) for ids in tiny.tokenizer(texts, truncation=True, max_length=tiny.max_length)["input_ids"]]
    padded = sum(rows * width for rows, width in fed)
    assert padded - sum(lengths) <= tiny.batch_size * (max(lengths) - min(lengths))  # at most one mixed chunk
    np.testing.assert_allclose(v[::7], np.concatenate([tiny.encode([t]) for t in texts[::7]]), atol=1e-5)
