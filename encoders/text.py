"""hf-text: a BERT-family transformers model with mean or CLS pooling.

options:
  pooling:    "mean" (default; masked mean of the last hidden state) or "cls"
  max_length: tokens kept per text (default: the tokenizer's limit, at most 512)

``model: mixrec-tiny-bert`` with ``weights: random`` builds a tiny untrained
BERT (for tests and smoke runs) using the WordPiece vocab of the bundled MiniLM
(encoders/model_configs/mixrec-tiny-bert.json, see encoders/architectures.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from encoders.architectures import build_random
from encoders.base import Encoder, l2_normalise
from encoders.device import DevicePlan, choose_device
from encoders.errors import EncoderConfigError
from encoders.media import check_text, decode_batch
from encoders.weights import WeightsSource, write_marker, resolve_weights
from mixrec.config import EncoderConfig, LimitsConfig

_OPTIONS = {"pooling", "max_length"}
_MODEL_TYPES = ("bert",)  # shipped random architectures this kind builds


def check_options(cfg: EncoderConfig, allowed: set[str]) -> None:
    unknown = set(cfg.options) - allowed
    if unknown:
        raise EncoderConfigError(f"options: unknown option(s) {sorted(unknown)} for kind {cfg.kind!r}; "
                                 f"allowed: {sorted(allowed)}")


def hub_or_dir(source: WeightsSource) -> tuple[str, dict]:
    """What to hand ``from_pretrained`` and the kwargs that keep local loads local."""
    if source.kind in ("local", "bentoml", "package"):
        if not source.is_dir:
            raise EncoderConfigError(f"weights: {source.ref} must be a directory in save_pretrained layout")
        return str(source.path), {"local_files_only": True}
    if source.kind == "hub":
        return source.hub_id, {}
    return source.ref, {}  # a bare tag for a transformers kind is a hub id


class HFTextEncoder(Encoder):
    modality = "text"
    kind = "hf-text"

    def __init__(self, model, tokenizer, *, model_name: str, source: WeightsSource, plan: DevicePlan,
                 pooling: str = "mean", max_length: int = 256, batch_size: int = 32,
                 limits: LimitsConfig | None = None):
        if pooling not in ("mean", "cls"):
            raise EncoderConfigError(f"options.pooling must be 'mean' or 'cls', got {pooling!r}")
        self.model = model.to(plan.device, dtype=plan.dtype).eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.source = source
        self.plan = plan
        self.pooling = pooling
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.limits = limits or LimitsConfig()

    @classmethod
    def from_config(cls, cfg: EncoderConfig, limits: LimitsConfig | None = None) -> "HFTextEncoder":
        from transformers import AutoModel, AutoTokenizer

        check_options(cfg, _OPTIONS)
        source = resolve_weights(cfg.weights, cfg.model)
        plan = choose_device(cfg.device, cfg.fp16)
        try:
            if source.kind == "random":
                model, _, tokenizer = build_random(cfg.model, cfg.seed, _MODEL_TYPES)
            else:
                where, kw = hub_or_dir(source)
                tokenizer = AutoTokenizer.from_pretrained(where, **kw)
                model = AutoModel.from_pretrained(where, **kw)
        except EncoderConfigError:
            raise
        except (OSError, ValueError) as e:
            raise EncoderConfigError(f"cannot load text model {cfg.model!r} from weights "
                                     f"{source.describe()!r}: {e}") from None
        if getattr(model, "pooler", None) is not None:
            # unused (we pool the last hidden state ourselves), and randomly initialised on every load when the
            # checkpoint has none: dropping it keeps the weights fingerprint a function of the saved weights
            model.pooler = None
        limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512,
                    int(getattr(model.config, "max_position_embeddings", 512)))
        max_length = int(cfg.options.get("max_length", limit))
        if not 1 <= max_length <= limit:
            raise EncoderConfigError(f"options.max_length must be in 1..{limit}, got {max_length}")
        return cls(model, tokenizer, model_name=cfg.model, source=source, plan=plan,
                   pooling=cfg.options.get("pooling", "mean"), max_length=max_length,
                   batch_size=cfg.batch_size, limits=limits)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        texts = decode_batch(batch, lambda t: check_text(t, self.limits), "text")
        out = [self._encode_chunk(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def _encode_chunk(self, texts: list[str]) -> np.ndarray:
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        tok = {k: v.to(self.plan.device) for k, v in tok.items()}
        hidden = self.model(**tok).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return l2_normalise(pooled.cpu().numpy())

    def save(self, directory: str | Path) -> Path:
        """Write the model + tokenizer in save_pretrained layout (loadable as ``local:<dir>``)."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        write_marker(directory, kind=self.kind, model=self.model_name, trained=self.source.trained)
        return directory

    def describe(self) -> dict[str, Any]:
        return {**self._common_description(),
                "pooling": self.pooling, "max_length": self.max_length}
