"""hf-text: a BERT-family transformers model with mean or CLS pooling.

options:
  pooling:    "mean" (default; masked mean of the last hidden state) or "cls"
  max_length: tokens kept per text (default: the tokenizer's limit, at most 512)
  runtime:    "torch" (default) or "onnx": the same weights exported to ONNX and run by ONNX Runtime
              on the CPU (encoders/onnx_runtime.py; same vectors within 2e-5, same fingerprint)

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
from encoders.onnx_runtime import runtime_option
from encoders.weights import WeightsSource, write_marker, resolve_weights
from mixrec.config import EncoderConfig, LimitsConfig

_OPTIONS = {"pooling", "max_length", "runtime"}
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


class PooledText(torch.nn.Module):
    """token ids + attention mask -> pooled (not yet normalised) vectors: the one forward pass of both runtimes."""

    def __init__(self, model, pooling: str) -> None:
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class HFTextEncoder(Encoder):
    modality = "text"
    kind = "hf-text"

    def __init__(self, model, tokenizer, *, model_name: str, source: WeightsSource, plan: DevicePlan,
                 pooling: str = "mean", max_length: int = 256, batch_size: int = 32,
                 limits: LimitsConfig | None = None, runtime: str = "torch"):
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
        self.sort_by_length = True  # bench/encoders.py turns it off to measure the unsorted path
        self.runtime = runtime_option({"runtime": runtime}, str(plan.device.type))
        self.pooled = PooledText(self.model, pooling)
        self.onnx = self._export() if self.runtime == "onnx" else None

    def _export(self):
        from encoders.fingerprint import identity_digest
        from encoders.onnx_runtime import OnnxModule, export_key

        ex = self.tokenizer(["a short text", "and a somewhat longer second text to pad"], padding=True,
                            return_tensors="pt")
        return OnnxModule(self.pooled, {"input_ids": ex["input_ids"], "attention_mask": ex["attention_mask"]},
                          {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
                          export_key({"encoder": identity_digest(self)}, f"hf-text/{self.pooling}"))

    @classmethod
    def from_config(cls, cfg: EncoderConfig, limits: LimitsConfig | None = None) -> "HFTextEncoder":
        from transformers import AutoModel, AutoTokenizer

        check_options(cfg, _OPTIONS)
        runtime = runtime_option(cfg.options, cfg.device)
        source = resolve_weights(cfg.weights, cfg.model)
        plan = choose_device("cpu" if runtime == "onnx" else cfg.device, cfg.fp16)
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
                   batch_size=cfg.batch_size, limits=limits, runtime=runtime)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        """Tokenise the whole batch once, run it in chunks of similar token length, rows back in input order.

        Sorting by length before chunking means each chunk is padded only to its own longest text
        (dynamic padding), not to the longest text of the request: on short, uneven catalogue texts
        most of the compute otherwise goes on padding. A chunk's rows do not depend on what else is
        in it (masked positions are excluded from attention and pooling), so the order is free.
        """
        texts = decode_batch(batch, lambda t: check_text(t, self.limits), "text")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable") if self.sort_by_length else np.arange(len(ids))
        out = np.empty((len(texts), self.dim), np.float32)
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo:lo + self.batch_size]
            out[rows] = self._encode_ids([ids[i] for i in rows])
        return out

    @torch.inference_mode()
    def _encode_ids(self, ids: list[list[int]]) -> np.ndarray:
        tok = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="np" if self.onnx else "pt")
        if self.onnx is not None:
            return l2_normalise(self.onnx(input_ids=tok["input_ids"].astype(np.int64),
                                          attention_mask=tok["attention_mask"].astype(np.int64)))
        pooled = self.pooled(tok["input_ids"].to(self.plan.device), tok["attention_mask"].to(self.plan.device))
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
                "pooling": self.pooling, "max_length": self.max_length, "runtime": self.runtime}
