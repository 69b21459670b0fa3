"""Where an encoder runs: device and dtype chosen from config.

``auto`` takes CUDA when torch sees a GPU, else the CPU. Half precision is
used on CUDA only (when ``fp16`` is set): CPU kernels for fp16 are slow or
missing, so the CPU always runs float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from encoders.errors import EncoderConfigError


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def inputs(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a model input onto the device; floating inputs take the model dtype."""
        if tensor.is_floating_point():
            return tensor.to(self.device, dtype=self.dtype)
        return tensor.to(self.device)


def choose_device(requested: str = "auto", fp16: bool = True) -> DevicePlan:
    if requested not in ("auto", "cpu", "cuda"):
        raise EncoderConfigError(f"device must be auto, cpu or cuda, got {requested!r}")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise EncoderConfigError("device: cuda was requested but torch sees no CUDA device "
                                 "(use device: auto to fall back to the CPU)")
    use_cuda = requested == "cuda" or (requested == "auto" and has_cuda)
    if use_cuda:
        return DevicePlan(torch.device("cuda"), torch.float16 if fp16 else torch.float32)
    return DevicePlan(torch.device("cpu"), torch.float32)
