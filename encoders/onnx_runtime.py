"""The optional ONNX Runtime backend of the CPU encoders: ``options.runtime: onnx`` (default ``torch``).

The encoder still loads its torch model (its fingerprint is a digest of those weights); the module
that turns model inputs into vectors is exported once with ``torch.onnx.export`` and run by
``onnxruntime`` on the CPU. Exports are cached on disk (``$MIXREC_ONNX_CACHE``, default
``~/.cache/mixrec/onnx``) under a key made of the encoder's identity (kind, architecture, weights
digest, preprocessing, pooling knobs: encoders/fingerprint.py), what is exported, and the torch,
onnx and exporter versions: other weights never reuse a stale graph.

The runtime is NOT part of the encoder's identity: a session is only used after it reproduced the
torch module's outputs on a fixed input within ``TOLERANCE`` (checked at load, below the
fingerprint's float32 probe tolerance), so a model trained with torch vectors is served by ORT
without a retrain, and an export that drifts is refused at start instead of serving other vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from encoders.errors import EncoderConfigError

RUNTIMES = ("torch", "onnx")
ENV_CACHE = "MIXREC_ONNX_CACHE"
EXPORT_VERSION = 1  # bump when the exported graphs change (opset, wrappers)
OPSET = 17
TOLERANCE = 2e-5  # max |difference| of ORT vs torch outputs on the check input (fingerprint float32: 1e-4)


def runtime_option(options: Mapping[str, Any], device: str) -> str:
    """``options.runtime`` validated: ``torch`` or ``onnx`` (ONNX Runtime runs on the CPU here)."""
    runtime = options.get("runtime", "torch")
    if runtime not in RUNTIMES:
        raise EncoderConfigError(f"options.runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    if runtime == "onnx" and device == "cuda":
        raise EncoderConfigError("options.runtime: onnx runs on the CPU (CPUExecutionProvider); "
                                 "use device: cpu or auto with it, or runtime: torch on CUDA")
    return runtime


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "mixrec" / "onnx").expanduser()


def export_key(identity: Mapping[str, Any], graph: str) -> str:
    import onnx

    data = json.dumps({"identity": dict(identity), "graph": graph, "torch": torch.__version__, "onnx": onnx.__version__,
                       "export": EXPORT_VERSION, "opset": OPSET}, sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:24]


class OnnxModule:
    """A torch module exported to ONNX (cached) and run with onnxruntime; called with numpy inputs.

    ``example`` names the module's inputs in order (a small batch); ``dynamic`` maps an input name to
    its axes that vary (``{0: "batch", 1: "tokens"}``). The first output is returned as float32.
    """

    def __init__(self, module: torch.nn.Module, example: Mapping[str, torch.Tensor],
                 dynamic: Mapping[str, Mapping[int, str]], key: str) -> None:
        import onnxruntime as ort

        self.names = list(example)
        self.path = cache_dir() / f"{key}.onnx"
        if not self.path.is_file():
            self._export(module, example, dynamic)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()  # the same thread budget as the torch path
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self._check(module, example)

    def _export(self, module: torch.nn.Module, example: Mapping[str, torch.Tensor],
                dynamic: Mapping[str, Mapping[int, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # written beside and renamed: a concurrent worker never loads a half-written file
        fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=self.path.parent)
        os.close(fd)
        try:
            # grad enabled: nn.MultiheadAttention (open_clip) otherwise takes its fused fast path, which has no
            # ONNX export; nothing is trained here
            with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python branches fixed at export time
                torch.onnx.export(module.eval(), tuple(example.values()), tmp, input_names=self.names,
                                  output_names=["out"], dynamic_axes={**dynamic, "out": {0: "batch"}},
                                  opset_version=OPSET, dynamo=False)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared by the service's workers
            os.replace(tmp, self.path)
        except Exception as e:
            Path(tmp).unlink(missing_ok=True)
            raise EncoderConfigError(f"options.runtime: onnx: exporting {type(module).__name__} failed: "
                                     f"{type(e).__name__}: {e}") from None

    def _check(self, module: torch.nn.Module, example: Mapping[str, torch.Tensor]) -> None:
        from encoders.base import l2_normalise

        with torch.inference_mode():
            want = l2_normalise(module(*example.values()).float().cpu().numpy())
        have = l2_normalise(self(**{k: v.cpu().numpy() for k, v in example.items()}))  # vectors are unit rows
        diff = float(np.max(np.abs(have - want))) if want.size else 0.0
        if not diff <= TOLERANCE:
            raise EncoderConfigError(f"options.runtime: onnx: the exported graph {self.path} gives outputs "
                                     f"{diff:.3g} away from torch's (> {TOLERANCE:g}); delete it to re-export, "
                                     "or use runtime: torch")
        self.max_difference = diff

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {k: inputs[k] for k in self.names})[0], np.float32)
