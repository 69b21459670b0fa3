"""ImageEncoder service: CLIP (open_clip) images -> vectors, plus CLIP's text tower."""

from __future__ import annotations

import bentoml
import numpy as np

from services.encoder_runtime import apply_threads, describe_served, fingerprint_of, b64decode, encode_batch
from services.settings import CONFIG, batching, encoder_service_options


@bentoml.service(**encoder_service_options("image"))
class ImageEncoder:
    def __init__(self) -> None:
        from encoders.registry import build_encoder

        apply_threads(CONFIG.serving.image_encoder.threads)
        self.encoder = build_encoder(CONFIG.encoders.image, CONFIG.limits)

    @bentoml.api(**batching("image"))
    def encode(self, images_b64: list[str]) -> np.ndarray:
        """Encoded image files (base64) -> (n, dim); NaN rows for undecodable items."""
        return encode_batch(self.encoder, [b64decode(s, i, "image") for i, s in enumerate(images_b64)])

    @bentoml.api(**batching("image"))
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Text through the CLIP text tower, into the image space (cross-modal queries)."""
        return self.encoder.encode_text(texts)

    @bentoml.api
    def describe(self) -> dict:
        return describe_served(self.encoder)

    @bentoml.api
    def fingerprint(self) -> dict:
        """What determines this encoder's vectors (encoders/fingerprint.py); the Recommender checks it at start."""
        return fingerprint_of(self.encoder)
