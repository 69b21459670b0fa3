"""band-energy: an audio encoder kind from outside mixrec, registered through the ``mixrec.encoders`` entry point.

Vectors: the mean and standard deviation over time of the log energy in ``bands`` log-spaced frequency bands
(a crude timbre descriptor; no weights, so ``trained`` is False). It reuses mixrec's decoding and limits
(``encoders.media``), so bad uploads get the same typed 400/413/415 errors as the built-in kinds.

options:
  bands:        number of frequency bands (default 12); the vector has 2 * bands dimensions
  sample_rate:  clips are resampled to this rate first (default 16000)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from encoders.base import Encoder, l2_normalise
from encoders.errors import EncoderConfigError
from encoders.media import decode_audio, decode_batch, resample

FRAME, HOP = 512, 256


class BandEnergyAudioEncoder(Encoder):
    modality = "audio"
    kind = "band-energy"

    def __init__(self, bands: int = 12, sample_rate: int = 16_000, limits=None) -> None:
        if not 2 <= bands <= 64:
            raise EncoderConfigError(f"options.bands must be in 2..64, got {bands}")
        from mixrec.config import LimitsConfig

        self.bands, self.sample_rate = int(bands), int(sample_rate)
        self.limits = limits or LimitsConfig()
        freqs = np.fft.rfftfreq(FRAME, 1 / self.sample_rate)
        edges = np.geomspace(50.0, self.sample_rate / 2, self.bands + 1)
        # (bins, bands) 0/1 matrix: which FFT bins fall in each band
        self._bands = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])], 1)
        self._bands = self._bands.astype(np.float32)

    @classmethod
    def from_config(cls, cfg, limits=None) -> "BandEnergyAudioEncoder":
        unknown = set(cfg.options) - {"bands", "sample_rate"}
        if unknown:
            raise EncoderConfigError(f"options: unknown option(s) {sorted(unknown)} for kind 'band-energy'")
        return cls(int(cfg.options.get("bands", 12)), int(cfg.options.get("sample_rate", 16_000)), limits)

    @property
    def dim(self) -> int:
        return 2 * self.bands

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        waves = decode_batch(batch, lambda x: decode_audio(x, self.limits), "audio")
        return l2_normalise(np.stack([self._features(resample(w, self.sample_rate)) for w in waves])
                            if waves else np.zeros((0, self.dim), np.float32))

    def _features(self, x: np.ndarray) -> np.ndarray:
        x = np.pad(np.asarray(x, np.float32), (0, max(0, FRAME - len(x))))
        frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP] * np.hanning(FRAME).astype(np.float32)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        energy = np.log(power @ self._bands + 1e-8)
        return np.concatenate([energy.mean(0), energy.std(0)]).astype(np.float32)

    def identity(self) -> dict:
        """What mixrec's fingerprint cannot find on its own: this kind has no weights, its settings are all."""
        return {"architecture": {"bands": self.bands, "frame": FRAME, "hop": HOP}, "weights": None,
                "preprocessing": {"sample_rate": self.sample_rate}}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "modality": self.modality, "model": "band-energy", "weights": None,
                "device": "cpu", "dtype": "float32", "dim": self.dim, "trained": False,
                "trained_note": "untrained: a fixed signal-processing feature, no learned weights",
                "sample_rate": self.sample_rate}
