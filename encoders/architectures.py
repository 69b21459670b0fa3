"""The tiny untrained architectures behind ``weights: random``: one mechanism for every kind.

An architecture is data, as open_clip keeps its own: a JSON file in encoders/model_configs named
after ``model``, read by the library's own config factory.

  open-clip (mixrec-tiny-clip)   open_clip's model-config layout, registered with
                                 ``open_clip.add_model_config`` (encoders/image.py)
  hf-text, hf-audio              {"config": a transformers config with its model_type (for
  (mixrec-tiny-bert, -clap, -ast) ``AutoConfig.for_model``), "model_kwargs": for the model class,
                                 "feature_extractor": {"class": ..., its arguments},
                                 "tokenizer": "bundled" (MiniLM's WordPiece vocab, shipped offline)}

A new tiny architecture is a new JSON file; no code changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from encoders.errors import EncoderConfigError
from encoders.weights import bundled_tokenizer_dir

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


def shipped(model_types: tuple[str, ...]) -> list[str]:
    """Names of the shipped transformers architectures of these model types."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")
                  if json.loads(p.read_text()).get("config", {}).get("model_type") in model_types)


def build_random(name: str, seed: int, model_types: tuple[str, ...]) -> tuple:
    """(model, feature extractor or None, tokenizer or None): the named architecture, seeded weights."""
    import transformers

    if name not in shipped(model_types):
        raise EncoderConfigError(f"weights: random needs model to name an architecture shipped in "
                                 f"encoders/model_configs, one of {shipped(model_types)}; got model: {name!r}")
    spec = json.loads((MODEL_CONFIG_DIR / f"{name}.json").read_text())
    config_args = dict(spec["config"])
    config = transformers.AutoConfig.for_model(config_args.pop("model_type"), **config_args)
    tokenizer = None
    if spec.get("tokenizer") == "bundled":
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundled_tokenizer_dir()), local_files_only=True)
        text_cfg = getattr(config, "text_config", config)
        if text_cfg.vocab_size != len(tokenizer):  # the JSON's ids must be the bundled vocab's
            raise EncoderConfigError(f"{name}: vocab_size {text_cfg.vocab_size} != the bundled tokenizer's "
                                     f"{len(tokenizer)}")
    features = None
    if "feature_extractor" in spec:
        fe_args = dict(spec["feature_extractor"])
        features = getattr(transformers, fe_args.pop("class"))(**fe_args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # same seed, same weights
        model = transformers.AutoModel.from_config(config, **spec.get("model_kwargs", {}))
    return model, features, tokenizer
