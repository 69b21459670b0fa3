"""TextEncoder service: BERT-family text -> L2-normalised vectors (adaptive batching)."""

from __future__ import annotations

import bentoml
import numpy as np

from services.encoder_runtime import apply_threads, describe_served, fingerprint_of, encode_batch
from services.settings import CONFIG, batching, encoder_service_options


@bentoml.service(**encoder_service_options("text"))
class TextEncoder:
    def __init__(self) -> None:
        from encoders.registry import build_encoder  # imports torch: in the worker, not at import

        apply_threads(CONFIG.serving.text_encoder.threads)
        self.encoder = build_encoder(CONFIG.encoders.text, CONFIG.limits)

    @bentoml.api(**batching("text"))
    def encode(self, texts: list[str]) -> np.ndarray:
        return encode_batch(self.encoder, texts)

    @bentoml.api
    def describe(self) -> dict:
        return describe_served(self.encoder)

    @bentoml.api
    def fingerprint(self) -> dict:
        """What determines this encoder's vectors (encoders/fingerprint.py); the Recommender checks it at start."""
        return fingerprint_of(self.encoder)
