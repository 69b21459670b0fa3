"""AudioEncoder service: decode + resample (torchaudio) + a transformers audio model."""

from __future__ import annotations

import bentoml
import numpy as np

from services.encoder_runtime import apply_threads, describe_served, fingerprint_of, b64decode, encode_batch
from services.settings import CONFIG, batching, encoder_service_options


@bentoml.service(**encoder_service_options("audio"))
class AudioEncoder:
    def __init__(self) -> None:
        from encoders.registry import build_encoder

        apply_threads(CONFIG.serving.audio_encoder.threads)
        self.encoder = build_encoder(CONFIG.encoders.audio, CONFIG.limits)

    @bentoml.api(**batching("audio"))
    def encode(self, clips_b64: list[str]) -> np.ndarray:
        """Encoded audio files (base64: WAV/FLAC/OGG/MP3) -> (n, dim); NaN rows for bad items."""
        return encode_batch(self.encoder, [b64decode(s, i, "audio") for i, s in enumerate(clips_b64)])

    @bentoml.api
    def describe(self) -> dict:
        return describe_served(self.encoder)

    @bentoml.api
    def fingerprint(self) -> dict:
        """What determines this encoder's vectors (encoders/fingerprint.py); the Recommender checks it at start."""
        return fingerprint_of(self.encoder)
