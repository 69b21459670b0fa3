"""Decode untrusted media into arrays, enforcing the configured limits.

Every failure raises ``InvalidMediaError`` with the modality and a reason; the
encoders add the batch index. Nothing here runs a model.

Audio policy: empty audio and clips under 10 ms are rejected; silent audio is valid (it encodes to a
finite vector); clips longer than ``max_upload_audio_seconds`` are rejected,
clips longer than ``max_audio_seconds`` are cropped to their first
``max_audio_seconds`` (the crop is deterministic, unlike the random crops some
feature extractors take).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from encoders.errors import InvalidMediaError
from mixrec.config import LimitsConfig

# A file cut mid-data still decodes (libsndfile keeps the frames present); a
# fragment this short carries nothing to encode, so it is refused.
MIN_AUDIO_SECONDS = 0.01

Source = bytes | bytearray | memoryview | str | os.PathLike


def _read_bytes(item: Any, modality: str, max_bytes: int) -> bytes:
    """Bytes of an encoded file given as bytes or a path, within ``max_bytes``."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise InvalidMediaError(f"file not found: {path}", modality=modality)
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidMediaError(f"file is {size} bytes, the limit is {max_bytes}", modality=modality)
        data = path.read_bytes()
    else:
        raise InvalidMediaError(f"expected encoded bytes or a file path, got {type(item).__name__}",
                                modality=modality)
    if not data:
        raise InvalidMediaError("empty input (0 bytes)", modality=modality)
    if len(data) > max_bytes:
        raise InvalidMediaError(f"input is {len(data)} bytes, the limit is {max_bytes}", modality=modality)
    return data


# ---------------------------------------------------------------- text

def check_text(item: Any, limits: LimitsConfig) -> str:
    if not isinstance(item, str):
        raise InvalidMediaError(f"expected a string, got {type(item).__name__}", modality="text")
    if not item.strip():
        raise InvalidMediaError("empty or whitespace-only text", modality="text")
    if len(item) > limits.max_text_chars:
        raise InvalidMediaError(f"text is {len(item)} characters, the limit is {limits.max_text_chars}",
                                modality="text")
    return item


# ---------------------------------------------------------------- image

def _check_pixels(width: int, height: int, limits: LimitsConfig) -> None:
    if width <= 0 or height <= 0:
        raise InvalidMediaError(f"image has no pixels ({width}x{height})", modality="image")
    if width * height > limits.max_image_pixels:
        raise InvalidMediaError(f"image is {width}x{height} = {width * height} pixels, the limit is "
                                f"{limits.max_image_pixels}", modality="image")


def decode_image(item: Any, limits: LimitsConfig) -> Image.Image:
    """An RGB PIL image from bytes, a path or a PIL image."""
    if isinstance(item, Image.Image):
        _check_pixels(*item.size, limits)
        return item.convert("RGB")
    data = _read_bytes(item, "image", limits.max_image_bytes)
    try:
        # Image.open only parses the header: check the pixel count before decoding
        # so a decompression bomb is refused without allocating it. PIL's own
        # global guard would warn/raise at other thresholds; ours is the config's.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_pixels(*img.size, limits)
            img.load()
        return img.convert("RGB")
    except InvalidMediaError:
        raise
    except Image.DecompressionBombError as e:
        raise InvalidMediaError(f"image too large: {e}", modality="image") from None
    except Image.UnidentifiedImageError:
        raise InvalidMediaError("not a recognised image format", modality="image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidMediaError(f"corrupt or truncated image: {e}", modality="image") from None


# ---------------------------------------------------------------- audio

@dataclass
class Waveform:
    samples: np.ndarray  # float32 mono, already cropped
    sample_rate: int
    seconds: float  # duration before cropping


def _mono(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:  # (frames, channels)
        samples = samples.mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _validated(samples: np.ndarray, sr: int, seconds: float, limits: LimitsConfig,
               max_seconds: float | None = None) -> Waveform:
    cap = limits.max_upload_audio_seconds if max_seconds is None else max_seconds
    if seconds > cap:
        raise InvalidMediaError(f"audio is {seconds:.1f} s long, the limit is {cap:g} s", modality="audio")
    if samples.size == 0:
        raise InvalidMediaError("audio has no samples", modality="audio")
    if samples.size < MIN_AUDIO_SECONDS * sr:
        raise InvalidMediaError(f"audio is {samples.size / sr * 1000:.1f} ms long, too short to encode "
                                f"(minimum {MIN_AUDIO_SECONDS * 1000:g} ms)", modality="audio")
    if not np.isfinite(samples).all():
        raise InvalidMediaError("audio contains NaN or infinite samples", modality="audio")
    keep = int(round(limits.max_audio_seconds * sr))
    return Waveform(samples[:keep], sr, seconds)


def waveform_from_array(item: tuple, limits: LimitsConfig) -> Waveform:
    if len(item) != 2:
        raise InvalidMediaError("expected (waveform, sample_rate)", modality="audio")
    samples, sr = item
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise InvalidMediaError(f"sample rate must be a positive int, got {sr!r}", modality="audio")
    try:
        arr = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidMediaError("waveform is not numeric", modality="audio") from None
    if arr.ndim == 2 and arr.shape[0] < arr.shape[1] and arr.shape[0] <= 8:
        arr = arr.T  # (channels, frames) as torchaudio returns it
    if arr.ndim not in (1, 2):
        raise InvalidMediaError(f"waveform must be 1-D or 2-D, got {arr.ndim}-D", modality="audio")
    samples = _mono(arr)
    return _validated(samples, int(sr), samples.size / int(sr), limits)


def _decode_soundfile(data: bytes, limits: LimitsConfig) -> Waveform | None:
    """WAV/FLAC/OGG (and MP3 where libsndfile has it); None when soundfile can't parse it."""
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr = int(f.samplerate)
            seconds = f.frames / sr if sr > 0 else 0.0
            if seconds > limits.max_upload_audio_seconds:
                return _validated(np.zeros(0, np.float32), sr, seconds, limits)  # raises
            frames = min(f.frames, int(round(limits.max_audio_seconds * sr)) + 1)
            samples = f.read(frames, dtype="float32", always_2d=True)
    except InvalidMediaError:
        raise
    except Exception:  # libsndfile error types vary by version; fall through to PyAV
        return None
    return _validated(_mono(samples), sr, seconds, limits)


def decode_audio_av(data: bytes | str | os.PathLike, limits: LimitsConfig,
                    max_seconds: float | None = None) -> Waveform:
    """First audio stream of any container PyAV reads (MP3, MP4/MKV/WebM audio tracks, ...).

    Raises InvalidMediaError("no audio stream") when the container has none.
    """
    import av

    cap = limits.max_upload_audio_seconds if max_seconds is None else max_seconds
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else str(data)
    try:
        with av.open(src, mode="r") as container:
            if not container.streams.audio:
                raise InvalidMediaError("no audio stream", modality="audio")
            stream = container.streams.audio[0]
            sr = int(stream.codec_context.sample_rate or stream.rate or 0)
            if sr <= 0:
                raise InvalidMediaError("audio stream has no sample rate", modality="audio")
            known = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                     else container.duration / 1e6 if container.duration else None)
            if known is not None and known > cap:
                raise InvalidMediaError(f"audio is {known:.1f} s long, the limit is {cap:g} s",
                                        modality="audio")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
            keep = int(round(limits.max_audio_seconds * sr))
            chunks, total = [], 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    if total < keep:
                        chunks.append(arr[: keep - total])
                    total += arr.size
                if known is not None and total >= keep:
                    break  # duration already checked: the rest would be cropped anyway
                if total > cap * sr:
                    raise InvalidMediaError(f"audio is longer than the limit of {cap:g} s", modality="audio")
    except InvalidMediaError:
        raise
    except Exception as e:  # av.error.* (InvalidDataError, ...) and container quirks
        raise InvalidMediaError(f"cannot decode audio: {type(e).__name__}: {e}", modality="audio") from None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    seconds = known if known is not None else total / sr
    return _validated(samples, sr, seconds, limits, max_seconds=cap)


def decode_audio(item: Any, limits: LimitsConfig) -> Waveform:
    """Mono float32 audio from bytes, a path or ``(waveform, sample_rate)``."""
    if isinstance(item, tuple):
        return waveform_from_array(item, limits)
    data = _read_bytes(item, "audio", limits.max_audio_bytes)
    decoded = _decode_soundfile(data, limits)
    return decoded if decoded is not None else decode_audio_av(data, limits)


def resample(wave: Waveform, target_sr: int) -> np.ndarray:
    if wave.sample_rate == target_sr:
        return wave.samples
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(wave.samples), wave.sample_rate, target_sr)
    return out.numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------- video

def video_source(item: Any, limits: LimitsConfig) -> str | io.BytesIO:
    """A path (kept as a path: videos are large) or in-memory bytes, size-checked."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise InvalidMediaError(f"file not found: {path}", modality="video")
        if path.stat().st_size > limits.max_video_bytes:
            raise InvalidMediaError(f"video is {path.stat().st_size} bytes, the limit is "
                                    f"{limits.max_video_bytes}", modality="video")
        if path.stat().st_size == 0:
            raise InvalidMediaError("empty input (0 bytes)", modality="video")
        return str(path)
    return io.BytesIO(_read_bytes(item, "video", limits.max_video_bytes))


def read_keyframes(item: Any, n: int, limits: LimitsConfig, max_seconds: float) -> list[Image.Image]:
    """``n`` frames at evenly spaced times ((i + 0.5) / n of the duration), as RGB images."""
    import av

    src = video_source(item, limits)
    try:
        with av.open(src, mode="r") as container:
            if not container.streams.video:
                raise InvalidMediaError("no video stream", modality="video")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            _check_pixels(stream.codec_context.width or 1, stream.codec_context.height or 1, limits)
            duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                        else container.duration / 1e6 if container.duration else None)
            if duration is not None and duration > max_seconds:
                raise InvalidMediaError(f"video is {duration:.1f} s long, the limit is {max_seconds:g} s",
                                        modality="video")
            frames = (_seek_frames(container, stream, duration, n) if duration
                      else _scan_frames(container, stream, n, max_seconds, src))
    except InvalidMediaError:
        raise
    except Exception as e:
        raise InvalidMediaError(f"cannot decode video: {type(e).__name__}: {e}", modality="video") from None
    if not frames:
        raise InvalidMediaError("video has no decodable frames", modality="video")
    return [f.to_image().convert("RGB") for f in frames]


def _seek_frames(container, stream, duration: float, n: int) -> list:
    """Seek to each target time (nearest earlier keyframe) and decode forward to it."""
    frames = []
    for i in range(n):
        target = (i + 0.5) / n * duration
        container.seek(int(target / stream.time_base) + (stream.start_time or 0), stream=stream,
                       backward=True, any_frame=False)
        chosen = None
        for frame in container.decode(stream):
            chosen = frame
            if frame.time is None or frame.time >= target:
                break
        if chosen is not None:
            frames.append(chosen)
    return frames


def _scan_frames(container, stream, n: int, max_seconds: float, src) -> list:
    """No duration in the header: count packets (no decoding), then decode once keeping only the n frames.

    Holding every decoded frame would let a long headerless stream (raw H.264, MJPEG) exhaust memory.
    """
    import av

    total = 0
    for packet in container.demux(stream):
        if packet.size:
            total += 1
            t = packet.pts * packet.time_base if packet.pts is not None and packet.time_base else None
            if t is not None and t > max_seconds:
                raise InvalidMediaError(f"video is longer than the limit of {max_seconds:g} s", modality="video")
    rate = stream.average_rate or stream.guessed_rate  # raw streams carry no pts: duration = frames / rate
    if rate and total / float(rate) > max_seconds:
        raise InvalidMediaError(f"video is {total / float(rate):.1f} s long, the limit is {max_seconds:g} s",
                                modality="video")
    if total == 0:
        return []
    idx = [min(total - 1, int((i + 0.5) / n * total)) for i in range(n)]
    wanted, kept, last = set(idx), {}, None
    if isinstance(src, io.BytesIO):
        src.seek(0)
    with av.open(src, mode="r") as again:
        for i, frame in enumerate(again.decode(again.streams.video[0])):
            last = frame
            if i in wanted:
                kept[i] = frame
            if i >= idx[-1]:
                break
    # decoders may yield fewer frames than packets: the missing picks fall back to the last frame
    return [kept.get(i, last) for i in idx] if last is not None else []


def read_video_audio(item: Any, limits: LimitsConfig, max_seconds: float) -> Waveform | None:
    """The video's audio track (cropped like any audio), or None when it has none."""
    src = video_source(item, limits)
    data = src.getvalue() if isinstance(src, io.BytesIO) else src
    try:
        return decode_audio_av(data, limits, max_seconds=max_seconds)
    except InvalidMediaError as e:
        if e.reason == "no audio stream":
            return None
        raise InvalidMediaError(e.reason, modality="video") from None


def decode_batch(batch: Any, decode, modality: str) -> list:
    """Decode every item before any model runs, so a bad item is reported with its index."""
    if isinstance(batch, (str, bytes)) or not isinstance(batch, (list, tuple)):
        raise InvalidMediaError(f"a batch must be a list, got {type(batch).__name__}", modality=modality)
    out = []
    for i, item in enumerate(batch):
        try:
            out.append(decode(item))
        except InvalidMediaError as e:
            raise InvalidMediaError(e.reason, modality=modality, index=i) from None
    return out
