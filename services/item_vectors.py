"""Online half of the item -> vectors recipe (encoders/item_recipe.py): prepare, one batch per modality, assemble.

``prepare_item`` decodes an item's media within the budgets (in a worker thread) into what the
encoder services take; ``payloads`` lays every item's inputs of one modality into one list, so
``EncoderClient.encode_all`` makes one call per modality for a whole ``add_items`` request;
``assemble`` cuts the rows back into per-item vectors by the same rule as ``mixrec encode``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from encoders.item_recipe import keyframes_vector, video_fills
from mixrec.errors import InputError
from services.encoder_runtime import b64encode


@dataclass
class PreparedItem:
    """One item's encoder inputs (base64 where media): its own image/audio, or what its video fills in."""

    text: str
    image: str | None = None
    audio: str | None = None
    frames: list[str] = field(default_factory=list)  # keyframes (PNG) when the video provides the image
    soundtrack: str | None = None  # WAV when the video provides the audio


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def wav(wave) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave.samples, wave.sample_rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def checked_audio(data: bytes, limits) -> bytes:
    """``data`` once it decodes within the limits (rate, channels, length); the encoder decodes it again."""
    from encoders.media import decode_audio

    decode_audio(data, limits)
    return data


def prepare_item(text: str, image: bytes | None, audio: bytes | None, video: bytes | None,
                 limits, video_cfg) -> PreparedItem:
    """Decode and check everything first (a 4xx names the problem before any encoder runs)."""
    from encoders.media import check_text, image_for_encoder
    from encoders.video import decode_video

    out = PreparedItem(check_text(text, limits))
    if image is not None:
        out.image = b64encode(image_for_encoder(image, limits))
    if audio is not None:
        out.audio = b64encode(checked_audio(audio, limits))
    fills = video_fills(image is not None, audio is not None, video is not None)
    if fills is not None:
        frames, track = decode_video(video, video_cfg.keyframes, limits, video_cfg.max_seconds)
        if fills.image:
            out.frames = [b64encode(png(f)) for f in frames]
        if fills.audio and track is not None:
            out.soundtrack = b64encode(wav(track))
    return out


def payloads(items: Sequence[PreparedItem]) -> dict[str, list[str]]:
    """Every item's inputs per modality, in item order (explicit image or keyframes; audio or soundtrack)."""
    image: list[str] = []
    audio: list[str] = []
    for it in items:
        image += [it.image] if it.image is not None else it.frames
        if (clip := it.audio if it.audio is not None else it.soundtrack) is not None:
            audio.append(clip)
    return {"text": [it.text for it in items], "image": image, "audio": audio}


def assemble(items: Sequence[PreparedItem], encoded: dict[str, np.ndarray], ids: Sequence[str]
             ) -> list[dict[str, np.ndarray]]:
    """Per item {modality: vector}; a row the encoder could not encode is a 400 naming the item."""
    rows = {m: iter(encoded.get(m, np.zeros((0, 0), np.float32))) for m in ("text", "image", "audio")}
    out = []
    for i, it in enumerate(items):
        vecs = {"text": next(rows["text"])}
        if it.image is not None:
            vecs["image"] = next(rows["image"])
        elif it.frames:
            vecs["image"] = keyframes_vector(np.stack([next(rows["image"]) for _ in it.frames]))
        if it.audio is not None or it.soundtrack is not None:
            vecs["audio"] = next(rows["audio"])
        for modality, v in vecs.items():
            if not np.all(np.isfinite(v)):
                raise InputError(f"item {ids[i]!r} (index {i}): its {modality} input could not be encoded")
        out.append(vecs)
    return out
