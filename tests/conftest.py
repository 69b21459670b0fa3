"""Shared fixtures: offline env, isolated BentoML home, generated media, tiny saved models.

Media is generated here (PIL, numpy + soundfile, PyAV): no binary files are committed.
"""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


# ---------------------------------------------------------------- BentoML model store

@pytest.fixture
def bentoml_home(tmp_path, monkeypatch):
    """A fresh BENTOML_HOME for this test, for this process and any subprocess it starts."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = tmp_path / "bentoml"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("BENTOML_HOME", str(home))
    # BentoML memoises its home and store on first use; point them at the tmp dir.
    with BentoMLContainer.bentoml_home.patch(str(home)), \
            BentoMLContainer.model_store_dir.patch(str(home / "models")), \
            BentoMLContainer.model_store.patch(ModelStore(str(home / "models"))):
        yield home


# ---------------------------------------------------------------- media generators

def sine(freq: float = 440.0, seconds: float = 1.0, sr: int = 16_000, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def audio_bytes(freq: float = 440.0, seconds: float = 1.0, sr: int = 16_000, fmt: str = "WAV",
                channels: int = 1) -> bytes:
    import soundfile as sf

    wave = sine(freq, seconds, sr)
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt)
    return buf.getvalue()


def image_bytes(color=(200, 30, 30), size=(48, 40), fmt: str = "PNG") -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, color)
    ImageDraw.Draw(img).rectangle([size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2], fill=(20, 20, 220))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_mp4(path: Path, seconds: float = 1.0, fps: int = 10, size=(64, 48), audio_freq: float | None = 440.0,
              sr: int = 16_000) -> Path:
    """A tiny MPEG-4 video (colour ramp) with an optional AAC sine track, written with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = None
        if audio_freq is not None:
            audio = container.add_stream("aac", rate=sr)
            audio.layout = "mono"
        for i in range(int(seconds * fps)):
            shade = int(255 * i / max(1, seconds * fps - 1))
            arr = np.full((size[1], size[0], 3), (shade, 80, 255 - shade), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            wave = sine(audio_freq, seconds, sr)
            step = 1024
            for start in range(0, wave.size, step):
                chunk = wave[start:start + step][None, :]
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path


@pytest.fixture
def media():
    """The generators above, as a fixture for tests in any file."""
    class Media:
        pass

    m = Media()
    m.sine, m.audio_bytes, m.image_bytes, m.write_mp4 = sine, audio_bytes, image_bytes, write_mp4
    return m


# ---------------------------------------------------------------- tiny encoders, saved once per session

def encoder_config(kind: str, model: str, weights: str = "random", **kw):
    from mixrec.config import EncoderConfig

    return EncoderConfig(kind=kind, model=model, weights=weights, device="cpu", **kw)


TINY = {
    "text": ("hf-text", "mixrec-tiny-bert"),
    "image": ("open-clip", "mixrec-tiny-clip"),
    "audio": ("hf-audio", "mixrec-tiny-clap"),
}


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Each tiny untrained encoder built from its config and saved in its loadable layout."""
    from encoders.registry import build_encoder

    root = tmp_path_factory.mktemp("tiny-models")
    out = {}
    for modality, (kind, model) in TINY.items():
        out[modality] = build_encoder(encoder_config(kind, model, seed=7)).save(root / modality)
    return out


# ---------------------------------------------------------------- end-to-end (session-scoped)

from conftest_e2e import client, tiny_bento_server, tiny_demo  # noqa: E402,F401  (one built tiny Bento per session; client on a module's server)
