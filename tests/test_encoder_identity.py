"""Encoder identity by content (issue 11): the same weights under any source are one encoder, other weights
are another even at the same dims; honest ``trained``; the Recommender's start-up check refuses a mismatch."""

from __future__ import annotations

import asyncio
import sys

import pytest

from conftest import encoder_config
from encoders.errors import EncoderMismatchError
from encoders.fingerprint import check_same, describe_with_fingerprint, fingerprint, mismatches
from encoders.registry import build_encoder
from services.encoder_check import EncoderCheck


@pytest.fixture(scope="module")
def tiny_text(tiny_model_dirs):
    return build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", f"local:{tiny_model_dirs['text']}"))


def test_same_weights_under_local_bentoml_and_package_are_one_encoder(tiny_text, tiny_model_dirs, bentoml_home,
                                                                       tmp_path, monkeypatch):
    from tools.cli.models import import_model

    tag = import_model(tiny_model_dirs["text"], "tiny-text", "hf-text")
    pkg = tmp_path / "pkg" / "tiny_text_weights"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"def get_model_path():\n    return {str(tiny_model_dirs['text'])!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    # the random model the directory was saved from (seed 7), built from the architecture in code
    random = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", "random", seed=7))
    for weights in (f"bentoml:{tag}", "package:tiny_text_weights"):
        other = build_encoder(encoder_config("hf-text", "another-name-for-it", weights))
        assert mismatches(fingerprint(other), fingerprint(tiny_text)) == [], weights
        assert fingerprint(other)["digest"] == fingerprint(tiny_text)["digest"]
    assert mismatches(fingerprint(random), fingerprint(tiny_text)) == []
    sys.modules.pop("tiny_text_weights", None)


def test_same_dims_other_weights_are_another_encoder(tiny_text):
    other = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", "random", seed=8))
    assert other.dim == tiny_text.dim
    diff = mismatches(fingerprint(other), fingerprint(tiny_text))
    assert any(d.startswith("weights ") for d in diff) and any("probe vectors differ" in d for d in diff), diff
    with pytest.raises(EncoderMismatchError) as err:
        check_same({"text": describe_with_fingerprint(other)}, {"text": describe_with_fingerprint(tiny_text)},
                   have_name="the served encoders", want_name="the artifacts", fix="Fix: retrain")
    msg = str(err.value)
    assert "the served encoders has hf-text:mixrec-tiny-bert (weights random" in msg
    assert "the artifacts has hf-text:mixrec-tiny-bert (weights local:" in msg and "Fix: retrain" in msg


def test_pooling_and_max_length_are_part_of_the_identity(tiny_model_dirs, tiny_text):
    cls = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", f"local:{tiny_model_dirs['text']}",
                                       options={"pooling": "cls"}))
    assert "pooling 'cls' vs 'mean'" in mismatches(fingerprint(cls), fingerprint(tiny_text))


def test_weights_saved_by_transformers_without_a_marker_are_not_reported_trained(tmp_path, bentoml_home):
    """Regression: a random tiny BERT saved with save_pretrained used to report trained: true."""
    from encoders.architectures import build_random
    from tools.cli.models import import_model

    model, _, tok = build_random("mixrec-tiny-bert", 0, ("bert",))
    model.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    d = build_encoder(encoder_config("hf-text", "my-bert", f"local:{tmp_path / 'bert'}")).describe()
    assert d["trained"] is False and "mixrec models import" in d["trained_note"]
    unmarked = import_model(tmp_path / "bert", "my-bert", "hf-text")
    marked = import_model(tmp_path / "bert", "my-bert", "hf-text", trained=True)
    assert build_encoder(encoder_config("hf-text", "my-bert", f"bentoml:{unmarked}")).describe()["trained"] is False
    assert build_encoder(encoder_config("hf-text", "my-bert", f"bentoml:{marked}")).describe()["trained"] is True


def test_shared_dim_capped_is_reported():
    from fusion.shared_space import SharedSpace
    from fusion.synthetic import make_catalog
    from mixrec.config import FusionConfig

    cat = make_catalog()
    native = cat.embeddings.dims()["text"]
    space = SharedSpace.fit(cat.embeddings, FusionConfig(shared_dim=native + 16))
    assert space.dim == native
    assert space.adjustments() == [{"field": "fusion.shared_dim", "configured": native + 16, "used": native,
                                    "why": f"capped at the text (anchor) encoder's dimension {native}"}]
    assert SharedSpace.fit(cat.embeddings, FusionConfig(shared_dim=8)).adjustments() == []


# ---------------------------------------------------------------------------- the Recommender's start check
def _fetchers(records: dict[str, dict], fail_first: int = 0):
    calls = {"n": 0}

    def make(slot):
        async def fetch():
            calls["n"] += 1
            if calls["n"] <= fail_first:
                raise ConnectionError("encoder service still starting")
            return records[slot]["fingerprint"]
        return fetch
    return {slot: make(slot) for slot in records}


def test_start_check_passes_the_same_encoders_and_waits_for_encoder_services(tiny_text):
    rec = {"text": describe_with_fingerprint(tiny_text)}

    async def run():
        check = EncoderCheck(rec, "bentoml:mixrec-hybrid:v1")
        fetchers = _fetchers(rec, fail_first=1)
        with pytest.raises(ConnectionError):  # encoder service not up yet: still pending, not refused
            await check.run_once(fetchers)
        assert check.state == "pending"
        assert await check.ready(fetchers) is True
        assert check.state == "ok"
        await check.guard(fetchers)  # passes
    asyncio.run(run())


def test_start_check_refuses_other_weights_for_good_naming_both_sides(tiny_text):
    served = build_encoder(encoder_config("hf-text", "mixrec-tiny-bert", "random", seed=8))

    async def run():
        check = EncoderCheck({"text": describe_with_fingerprint(tiny_text)}, "bentoml:mixrec-hybrid:v1")
        fetchers = _fetchers({"text": describe_with_fingerprint(served)})
        assert await check.ready(fetchers) is False
        assert await check.ready(fetchers) is False  # final: never ready
        with pytest.raises(EncoderMismatchError) as err:
            await check.guard(fetchers)
        return str(err.value)
    msg = asyncio.run(run())
    assert "refuses to start" in msg and "the served encoder services has hf-text:mixrec-tiny-bert" in msg
    assert "the trained artifacts (bentoml:mixrec-hybrid:v1) has" in msg and "Fix:" in msg
    assert EncoderMismatchError.status == 503


def test_legacy_records_without_fingerprints_compare_kind_model_and_dim():
    a = {"kind": "hf-text", "model": "m", "dim": 48, "weights": "local:/x"}
    assert mismatches(a, {**a, "weights": "bentoml:m:v1"}) == []
    assert mismatches(a, {**a, "dim": 384}) == ["dim 48 vs 384"]
