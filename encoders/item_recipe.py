"""The one item -> vectors recipe, used offline (encoders/encode_catalog.py) and online (services/encoder_client.py).

    text  <- ``Item.text()`` (title, description, tags)
    image <- the item's own image; else its video's keyframes (mean of keyframe vectors, L2-normalised)
    audio <- the item's own audio; else its video's soundtrack (when the video has one)

Explicit media win and a video only fills what is missing: a seller who uploads a product photo
and a clip expects the photo to be what images are matched against. Both paths call the helpers
below, so an item with an image and a video gets the same vectors from ``mixrec encode`` as from
``add_items`` (tests/test_item_recipe.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from encoders.base import l2_normalise


@dataclass(frozen=True)
class VideoFills:
    """Which of an item's vectors come from its video."""

    image: bool
    audio: bool


def video_fills(has_image: bool, has_audio: bool, has_video: bool) -> VideoFills | None:
    """What the video provides, or None when the item has no video or its own media cover both."""
    if not has_video or (has_image and has_audio):
        return None
    return VideoFills(image=not has_image, audio=not has_audio)


def keyframes_vector(frame_vectors: np.ndarray) -> np.ndarray:
    """A video's image vector: the mean of its keyframe vectors, L2-normalised."""
    return l2_normalise(np.asarray(frame_vectors, np.float32).mean(axis=0))
