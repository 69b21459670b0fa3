"""The tiny offline architectures are data (encoders/model_configs/*.json) behind one mechanism."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

import encoders.image  # noqa: F401  (registers the open_clip architectures)
from encoders.architectures import MODEL_CONFIG_DIR, build_random, shipped
from encoders.errors import EncoderConfigError

TRANSFORMERS_KINDS = {"hf-text": ("bert",), "hf-audio": ("clap", "audio-spectrogram-transformer")}


def test_every_shipped_architecture_is_a_json_file_one_library_builds():
    names = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
    assert names == ["mixrec-tiny-ast", "mixrec-tiny-bert", "mixrec-tiny-clap", "mixrec-tiny-clip"]
    transformers_names = {n for types in TRANSFORMERS_KINDS.values() for n in shipped(types)}
    open_clip_names = {n for n in names if "vision_cfg" in json.loads((MODEL_CONFIG_DIR / f"{n}.json").read_text())}
    assert transformers_names | open_clip_names == set(names) and not transformers_names & open_clip_names
    assert open_clip_names <= set(open_clip.list_models())
    for types in TRANSFORMERS_KINDS.values():
        for name in shipped(types):
            model, _, _ = build_random(name, 0, types)
            assert model.config.model_type in types


def test_same_seed_same_weights_other_seed_other_weights():
    def weights(seed):
        return next(iter(build_random("mixrec-tiny-bert", seed, ("bert",))[0].state_dict().values()))

    assert torch.equal(weights(3), weights(3)) and not torch.equal(weights(3), weights(4))


def test_an_architecture_of_another_kind_is_refused_naming_the_shipped_ones():
    with pytest.raises(EncoderConfigError, match=r"one of \['mixrec-tiny-bert'\]; got model: 'mixrec-tiny-clap'"):
        build_random("mixrec-tiny-clap", 0, ("bert",))
