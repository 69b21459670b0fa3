"""Video = keyframes through the image encoder + the audio track through the audio encoder.

Not a registry kind: a video's vectors live in the image and audio spaces, so
it is built from the configured image and audio encoders plus ``cfg.video``. Which of
an item's vectors its video provides is encoders/item_recipe.py's rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from encoders.base import Encoder
from encoders.errors import InvalidMediaError
from encoders.item_recipe import keyframes_vector
from encoders.media import decode_batch, read_keyframes, read_video_audio
from mixrec.config import LimitsConfig, MixrecConfig


@dataclass
class VideoEmbeddings:
    image: np.ndarray  # (n, image dim): mean of keyframe vectors, renormalised
    audio: np.ndarray  # (n, audio dim): zeros where audio_mask is False
    audio_mask: np.ndarray  # (n,) bool: the video has an audio track


def decode_video(item: Any, keyframes: int, limits: LimitsConfig, max_seconds: float) -> tuple[list, Any]:
    """(keyframes as images, soundtrack Waveform or None): what a video gives, offline and online alike."""
    frames = read_keyframes(item, keyframes, limits, max_seconds)
    try:
        audio = read_video_audio(item, limits, max_seconds)
    except InvalidMediaError as e:
        raise type(e)(f"audio track: {e.reason}", modality="video") from None  # keeps its 400/413/415
    return frames, audio


class VideoEncoder:
    modality = "video"

    def __init__(self, image_encoder: Encoder, audio_encoder: Encoder, keyframes: int = 4,
                 limits: LimitsConfig | None = None, max_seconds: float = 600.0):
        if keyframes < 1:
            raise ValueError("keyframes must be >= 1")
        self.image_encoder = image_encoder
        self.audio_encoder = audio_encoder
        self.keyframes = int(keyframes)
        self.limits = limits or LimitsConfig()
        self.max_seconds = float(max_seconds)

    @classmethod
    def from_config(cls, cfg: MixrecConfig, image_encoder: Encoder, audio_encoder: Encoder) -> "VideoEncoder":
        return cls(image_encoder, audio_encoder, keyframes=cfg.video.keyframes, limits=cfg.limits,
                   max_seconds=cfg.video.max_seconds)

    def _decode(self, item: Any) -> tuple[list, Any]:
        return decode_video(item, self.keyframes, self.limits, self.max_seconds)

    def encode(self, batch: Sequence[Any]) -> VideoEmbeddings:
        """Videos as bytes or paths. Every video is decoded before any model runs."""
        decoded = decode_batch(batch, self._decode, "video")
        n = len(decoded)
        image = np.zeros((n, self.image_encoder.dim), np.float32)
        audio = np.zeros((n, self.audio_encoder.dim), np.float32)
        mask = np.array([a is not None for _, a in decoded], dtype=bool)
        if n:
            frames = [f for fs, _ in decoded for f in fs]
            vectors = self.image_encoder.encode(frames)
            start = 0
            for i, (fs, _) in enumerate(decoded):
                image[i] = keyframes_vector(vectors[start:start + len(fs)])
                start += len(fs)
        if mask.any():
            audio[mask] = self._encode_audio([a for _, a in decoded if a is not None])
        return VideoEmbeddings(image, audio, mask)

    def _encode_audio(self, waves: list) -> np.ndarray:
        by_waveform = getattr(self.audio_encoder, "encode_waveforms", None)
        if by_waveform is not None:
            return by_waveform(waves)
        return self.audio_encoder.encode([(w.samples, w.sample_rate) for w in waves])

    def describe(self) -> dict[str, Any]:
        return {"keyframes": self.keyframes, "max_seconds": self.max_seconds,
                "image": self.image_encoder.describe(), "audio": self.audio_encoder.describe()}
