"""The one small interface every encoder implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np


class Encoder(ABC):
    """Maps a batch of raw inputs of one modality to L2-normalised float32 rows.

    Inputs by modality:
      * text:  ``str``
      * image: ``bytes`` (encoded file), a path, or a ``PIL.Image.Image``
      * audio: ``bytes`` (encoded file), a path, or ``(waveform: np.ndarray, sample_rate: int)``
    """

    modality: ClassVar[str]

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of the vectors ``encode`` returns."""

    @abstractmethod
    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        """Return an array of shape (len(batch), dim), float32, unit-norm rows.

        Raises ``InvalidMediaError`` naming the batch index of the first bad item.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """kind, modality, model, weights source, device, dtype, dim, trained flag."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Cross-modal text tower (CLIP / CLAP): text -> this encoder's space."""
        raise NotImplementedError(f"{type(self).__name__} has no text tower")

    @property
    def has_text_tower(self) -> bool:
        return type(self).encode_text is not Encoder.encode_text

    def _common_description(self) -> dict[str, Any]:
        """The describe() fields every built-in encoder shares (they set kind, model_name, source, plan)."""
        return {"kind": self.kind, "modality": self.modality, "model": self.model_name,
                "weights": self.source.describe(), "device": str(self.plan.device),
                "dtype": self.plan.dtype_name, "dim": self.dim, "trained": self.source.trained,
                "trained_note": self.source.trained_note}


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)
