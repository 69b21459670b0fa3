"""open-clip: an open_clip CLIP image tower, with its text tower for cross-modal queries.

``weights`` (see encoders/weights.py) maps onto open_clip's loaders:
  random                      untrained, seeded by ``seed`` (deterministic)
  <pretrained tag>            open_clip pretrained tag (downloads: needs the hub)
  hub:<org/repo>              ``hf-hub:<org/repo>``
  local:<dir> / bentoml:<tag> / package:<mod>
                              a directory in open_clip's local-dir layout
                              (open_clip_config.json + *.safetensors), see ``save``
  local:<file>                a bare checkpoint for the architecture in ``model``
                              (default preprocessing: keep the config beside it, #1068)

options:
  runtime   "torch" (default) or "onnx": the image tower exported to ONNX and run by ONNX Runtime on
            the CPU (encoders/onnx_runtime.py; same vectors within 2e-5, same fingerprint). The text
            tower (one short query at a time) stays on torch.

Architectures shipped in encoders/model_configs (e.g. ``mixrec-tiny-clip``) are
registered with open_clip on import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import open_clip
import torch
from open_clip.push_to_hf_hub import save_config_for_hf

from encoders.architectures import MODEL_CONFIG_DIR
from encoders.base import Encoder, l2_normalise
from encoders.device import DevicePlan, choose_device
from encoders.errors import EncoderConfigError
from encoders.media import check_text, decode_batch, decode_image
from encoders.onnx_runtime import runtime_option
from encoders.text import check_options
from encoders.weights import WeightsSource, write_marker, resolve_weights
from mixrec.config import EncoderConfig, LimitsConfig

open_clip.add_model_config(MODEL_CONFIG_DIR)  # the open_clip architectures there (encoders/architectures.py)

WEIGHTS_FILE = "open_clip_model.safetensors"
CONFIG_FILE = "open_clip_config.json"


def _load(cfg: EncoderConfig, source: WeightsSource, plan: DevicePlan):
    """(model, preprocess, tokenizer, model_cfg) through open_clip's own loaders."""
    kw = {"device": plan.device, "precision": "fp16" if plan.dtype == torch.float16 else "fp32"}
    if source.kind == "random":
        name, pretrained = cfg.model, None
    elif source.kind == "hub":
        name, pretrained = f"hf-hub:{source.hub_id}", None
    elif source.kind == "tag":
        name, pretrained = cfg.model, source.ref
    elif source.is_dir:
        if not (source.path / CONFIG_FILE).is_file():
            raise EncoderConfigError(f"weights: {source.ref} has no {CONFIG_FILE} (open_clip local-dir layout)")
        name, pretrained = f"local-dir:{source.path}", None
    else:  # a checkpoint file for the named architecture
        name, pretrained = cfg.model, str(source.path)
    if not name.startswith(("hf-hub:", "local-dir:")) and open_clip.get_model_config(name) is None:
        raise EncoderConfigError(f"model: unknown open_clip architecture {cfg.model!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # only matters for random weights: same seed, same model
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, **kw)
    tokenizer = open_clip.get_tokenizer(name)
    if name.startswith("local-dir:"):
        model_cfg = json.loads((source.path / CONFIG_FILE).read_text())["model_cfg"]
    else:
        model_cfg = open_clip.get_model_config(name) if not name.startswith("hf-hub:") else None
    return model, preprocess, tokenizer, model_cfg


class ImageTower(torch.nn.Module):
    """pixels -> image features: the image tower as one module, for both runtimes."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class OpenCLIPImageEncoder(Encoder):
    modality = "image"
    kind = "open-clip"

    def __init__(self, model, preprocess, tokenizer, *, model_name: str, model_cfg: dict | None,
                 source: WeightsSource, plan: DevicePlan, batch_size: int = 32,
                 limits: LimitsConfig | None = None, runtime: str = "torch"):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.model_cfg = model_cfg
        self.source = source
        self.plan = plan
        self.batch_size = int(batch_size)
        self.limits = limits or LimitsConfig()
        self._dim = int(model.text_projection.shape[1] if getattr(model, "text_projection", None) is not None
                        else model.visual.output_dim)
        self.runtime = runtime_option({"runtime": runtime}, str(plan.device.type))
        self.tower = ImageTower(self.model)
        self.onnx = self._export() if self.runtime == "onnx" else None

    def _export(self):
        from encoders.fingerprint import identity_digest
        from encoders.onnx_runtime import OnnxModule, export_key
        from encoders.fingerprint import probe_inputs

        pixels = torch.stack([self.preprocess(img) for img in probe_inputs("image") * 2])
        return OnnxModule(self.tower, {"pixels": pixels}, {"pixels": {0: "batch"}},
                          export_key({"encoder": identity_digest(self)}, "open-clip/image"))

    @classmethod
    def from_config(cls, cfg: EncoderConfig, limits: LimitsConfig | None = None) -> "OpenCLIPImageEncoder":
        check_options(cfg, {"runtime"})
        runtime = runtime_option(cfg.options, cfg.device)
        source = resolve_weights(cfg.weights, cfg.model)
        plan = choose_device("cpu" if runtime == "onnx" else cfg.device, cfg.fp16)
        try:
            model, preprocess, tokenizer, model_cfg = _load(cfg, source, plan)
        except EncoderConfigError:
            raise
        except (OSError, RuntimeError, ValueError) as e:
            raise EncoderConfigError(f"cannot load open_clip model {cfg.model!r} from weights "
                                     f"{source.describe()!r}: {e}") from None
        return cls(model, preprocess, tokenizer, model_name=cfg.model, model_cfg=model_cfg, source=source,
                   plan=plan, batch_size=cfg.batch_size, limits=limits, runtime=runtime)

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        images = decode_batch(batch, lambda x: decode_image(x, self.limits), "image")
        return self.encode_images(images)

    def encode_images(self, images: list) -> np.ndarray:
        """Already-decoded RGB PIL images (e.g. video keyframes) -> unit rows."""
        out = []
        for i in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.preprocess(img) for img in images[i:i + self.batch_size]])
            if self.onnx is not None:
                out.append(l2_normalise(self.onnx(pixels=pixels.numpy())))
            else:
                out.append(self._run(self.tower, self.plan.inputs(pixels)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        texts = decode_batch(texts, lambda t: check_text(t, self.limits), "text")
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[i:i + self.batch_size])
            out.append(self._run(self.model.encode_text, tokens.to(self.plan.device)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def _run(self, fn, inputs: torch.Tensor) -> np.ndarray:
        return l2_normalise(fn(inputs).float().cpu().numpy())

    def save(self, directory: str | Path) -> Path:
        """Write open_clip's local-dir layout: open_clip_config.json + safetensors weights."""
        from safetensors.torch import save_file

        if self.model_cfg is None:
            raise EncoderConfigError("this model's architecture config is unknown; cannot save it")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE)
        save_config_for_hf(self.model, directory / CONFIG_FILE, model_config=self.model_cfg)
        write_marker(directory, kind=self.kind, model=self.model_name, trained=self.source.trained)
        return directory

    def describe(self) -> dict[str, Any]:
        return {**self._common_description(),
                "image_size": int(self.model.visual.image_size[0]) if hasattr(self.model.visual, "image_size")
                else None, "text_tower": True, "runtime": self.runtime}
