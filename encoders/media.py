"""Decode untrusted media into arrays, enforcing the configured limits.

Every failure raises ``InvalidMediaError`` with the modality and a reason; the
encoders add the batch index. Nothing here runs a model. Subclasses carry the HTTP
status: ``UnsupportedMediaFormatError`` (415) when the bytes are not a format the
modality reads (a text file as an image, a JPEG as audio, a WAV as video);
``MediaTooLargeForBudgetError`` (413) when the input decodes to more than a work budget
allows. Corrupt data in a recognised format stays a plain ``InvalidMediaError`` (400).

Decoded-size budgets (bytes say little about cost: a 15 KB MP4 can be 6000x6000 px, a
244-byte WAV can claim a prime sample rate), all from ``LimitsConfig``:

* images: the header's pixel count <= ``max_image_pixels`` (400); JPEGs decode in draft
  mode (libjpeg's 1/2, 1/4, 1/8 scaling) near ``image_max_side``; the decoded size <=
  ``max_decoded_image_pixels`` (413); the RGB result is downscaled to ``image_max_side``.
  Peak memory of one decode <= 2 x 4 B x ``max_decoded_image_pixels`` (the decoded source and
  one RGB copy; PIL keeps multi-band pixels in 4 bytes): 128 MiB at the defaults (measured:
  16.7 Mpx RGBA PNG +128 MB, RGB or palette PNG +80 MB, greyscale +20 MB, 40 Mpx JPEG via
  draft +20 MB); the image kept afterwards is <= 4 B x ``image_max_side``^2 (4 MiB).
* audio: sample rate in [``min_audio_sample_rate``, ``max_audio_sample_rate``] and channels
  <= ``max_audio_channels``, checked on the header before decoding; samples are read in
  blocks and mixed to mono as they come, so at most ``AUDIO_BLOCK_FRAMES`` x channels
  samples are held besides the mono clip (<= 4 B x ``max_audio_seconds`` x rate: 44 MiB at
  30 s and 384 kHz); resampling kernels are bounded by ``MAX_RESAMPLE_KERNEL`` elements
  (see ``resample_rates``), so resampling costs a few times the clip, not the rates' product.
* video: frames <= ``max_video_pixels`` each (413), converted to RGB at <= ``image_max_side``
  as they are decoded, and at most ``max_video_decode_pixels`` decoded per video (beyond
  that, keyframe picks degrade to the nearest frame already decoded; see ``read_keyframes``).

Audio policy: empty audio and clips under 10 ms are rejected; silent audio is valid (it encodes to a
finite vector); clips longer than ``max_upload_audio_seconds`` are rejected,
clips longer than ``max_audio_seconds`` are cropped to their first
``max_audio_seconds`` (the crop is deterministic, unlike the random crops some
feature extractors take).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from encoders.errors import InvalidMediaError, MediaTooLargeForBudgetError, UnsupportedMediaFormatError
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


def _check_decoded_pixels(width: int, height: int, limits: LimitsConfig) -> None:
    if width * height > limits.max_decoded_image_pixels:
        raise MediaTooLargeForBudgetError(
            f"image decodes to {width}x{height} = {width * height} pixels, the decode budget is "
            f"{limits.max_decoded_image_pixels} pixels", modality="image")


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is ``max_side``, aspect kept (unchanged if it fits)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    return max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest))


def _to_rgb_within(img: Image.Image, max_side: int, owned: bool = False) -> Image.Image:
    """RGB, longest side <= ``max_side``; a no-op (bar the RGB conversion) on an image that already fits.

    That makes the whole decode idempotent: decoding a PNG of the result gives the same pixels,
    so a caller may pre-decode with ``image_for_encoder`` and get the same vector. ``owned``: ``img``
    was opened here and may be closed (its pixels freed) as soon as its RGB copy exists.
    """
    size = _fit(*img.size, max_side)
    if img.mode not in ("RGB", "L"):
        # the one full-size copy: <= 4 B/px next to the source's <= 4 B/px. Greyscale is scaled first
        # and converted last (the same pixels: every filter here works per channel).
        rgb = img.convert("RGB")
        if owned:
            img.close()
        img, owned = rgb, True
    if size != img.size:
        # Box-reduce first by an integer factor, keeping a 2x margin for the filter (what Pillow's
        # ``reducing_gap=2`` does), then LANCZOS to the exact size: same quality, a quarter of the work.
        factor = int(min(img.width / size[0], img.height / size[1]) / 2)
        if factor >= 2:
            reduced = img.reduce(factor)
            if owned:
                img.close()
            img, owned = reduced, True
        img, owned = img.resize(size, Image.Resampling.LANCZOS), True
    if img.mode != "RGB":
        return img.convert("RGB")
    return img if owned else img.copy()  # never hand back the caller's own PIL image


# Leading bytes of the image formats PIL reads that a caller may plausibly send. Only used once PIL has
# failed to identify the bytes, to tell a damaged image (400) from something that is no image (415).
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM",
                b"\x00\x00\x01\x00", b"icns", b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51", b"qoif", b"8BPS")


def _looks_like_image(data: bytes) -> bool:
    return (data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or (data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1")))


def decode_image(item: Any, limits: LimitsConfig) -> Image.Image:
    """An RGB PIL image from bytes, a path or a PIL image, longest side <= ``limits.image_max_side``.

    Budgets: the header's pixel count must be <= ``max_image_pixels`` (400, checked before any
    pixel is decoded); JPEGs decode in draft mode at the smallest libjpeg scale (1/2, 1/4, 1/8)
    that still covers ``image_max_side``; the decoded size must then be <= ``max_decoded_image_pixels``
    (``MediaTooLargeForBudgetError``, 413); the result is downscaled (LANCZOS, aspect kept) to
    ``image_max_side``. Bytes that are no image format PIL reads raise ``UnsupportedMediaFormatError``
    (415); a corrupt or truncated image in a known format raises ``InvalidMediaError`` (400).
    """
    if isinstance(item, Image.Image):
        _check_pixels(*item.size, limits)
        _check_decoded_pixels(*item.size, limits)
        return _to_rgb_within(item, limits.image_max_side)
    data = _read_bytes(item, "image", limits.max_image_bytes)
    try:
        # Image.open only parses the header: check the pixel count before decoding
        # so a decompression bomb is refused without allocating it. PIL's own
        # global guard would warn/raise at other thresholds; ours is the config's.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_pixels(*img.size, limits)
            if img.format == "JPEG":
                # libjpeg decodes straight to a reduced scale: a 40 Mpx JPEG costs ~1/64 of its size.
                img.draft("RGB", _fit(*img.size, limits.image_max_side))
            _check_decoded_pixels(*img.size, limits)
            img.load()
            _check_decoded_pixels(*img.size, limits)  # formats whose size is only known once loaded
        return _to_rgb_within(img, limits.image_max_side, owned=True)
    except InvalidMediaError:
        raise
    except Image.DecompressionBombError as e:
        raise InvalidMediaError(f"image too large: {e}", modality="image") from None
    except Image.UnidentifiedImageError:
        if _looks_like_image(data):  # PIL gives up on a damaged header the same way as on a non-image
            raise InvalidMediaError("corrupt image: its header cannot be parsed", modality="image") from None
        raise UnsupportedMediaFormatError("not a recognised image format", modality="image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidMediaError(f"corrupt or truncated image: {e}", modality="image") from None


def image_for_encoder(data: bytes, limits: LimitsConfig) -> bytes:
    """PNG bytes of the image as the image encoder sees it (decoded, RGB, downscaled to ``image_max_side``).

    Decoding these bytes again gives exactly the same pixels (``decode_image`` leaves an image that
    fits alone), so sending them to the encoder gives the same vector as sending ``data``, while
    the encoder gets a small, already-bounded input. Raises like ``decode_image``.
    """
    buf = io.BytesIO()
    decode_image(data, limits).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------- audio

# Frames read from libsndfile at a time: the samples held besides the mono clip are at most
# AUDIO_BLOCK_FRAMES x channels (1 MiB of float32 at 16 channels; ~2 MiB with libsndfile's read
# buffers), whatever the header claims.
AUDIO_BLOCK_FRAMES = 16_384
# Largest resampling kernel built (elements); see ``resample``. 4 MiB of float32.
MAX_RESAMPLE_KERNEL = 1 << 20


@dataclass
class Waveform:
    samples: np.ndarray  # float32 mono, already cropped
    sample_rate: int
    seconds: float  # duration before cropping


def _check_audio_header(sr: int, channels: int | None, limits: LimitsConfig, modality: str = "audio") -> None:
    """Sample rate and channel count as the header states them, before anything is decoded or allocated."""
    lo, hi = limits.min_audio_sample_rate, limits.max_audio_sample_rate
    if not lo <= sr <= hi:
        raise InvalidMediaError(f"sample rate {sr} Hz is outside the accepted range {lo}..{hi} Hz",
                                modality=modality)
    if channels is not None and channels > limits.max_audio_channels:
        raise InvalidMediaError(f"audio has {channels} channels, the limit is {limits.max_audio_channels}",
                                modality=modality)


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
    _check_audio_header(int(sr), None, limits)
    try:
        arr = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidMediaError("waveform is not numeric", modality="audio") from None
    if arr.ndim == 2 and arr.shape[0] < arr.shape[1] and arr.shape[0] <= limits.max_audio_channels:
        arr = arr.T  # (channels, frames) as torchaudio returns it
    if arr.ndim not in (1, 2):
        raise InvalidMediaError(f"waveform must be 1-D or 2-D, got {arr.ndim}-D", modality="audio")
    if arr.ndim == 2:
        _check_audio_header(int(sr), arr.shape[1], limits)
    samples = _mono(arr)
    return _validated(samples, int(sr), samples.size / int(sr), limits)


def _decode_soundfile(data: bytes, limits: LimitsConfig) -> tuple[Waveform | None, str | None]:
    """WAV/FLAC/OGG/MP3 through libsndfile: (waveform, None), or (None, why) when it can't read the bytes.

    ``why`` is None when libsndfile does not recognise the format at all (PyAV may still), and
    libsndfile's message when it recognised the format but the file is damaged.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr, channels = int(f.samplerate), int(f.channels)
            if sr <= 0:
                _check_audio_header(sr, channels, limits)  # raises
            seconds = f.frames / sr
            if seconds > limits.max_upload_audio_seconds:
                return _validated(np.zeros(0, np.float32), sr, seconds, limits), None  # raises
            _check_audio_header(sr, channels, limits)  # before anything is read
            want = max(0, min(f.frames, int(round(limits.max_audio_seconds * sr)) + 1))
            # Read in blocks, mixing each to mono at once: a header claiming many channels never gets a
            # frames x channels buffer; the mono buffer is <= max_audio_seconds x max rate (44 MiB).
            samples, got = np.empty(want, np.float32), 0
            while got < want:
                block = f.read(min(AUDIO_BLOCK_FRAMES, want - got), dtype="float32", always_2d=True)
                if not len(block):
                    break
                samples[got:got + len(block)] = _mono(block)
                got += len(block)
            samples = samples[:got]
    except InvalidMediaError:
        raise
    except Exception as e:  # libsndfile error types vary by version; fall through to PyAV
        recognised = getattr(e, "code", 1) != 1  # SF_ERR_UNRECOGNISED_FORMAT
        return None, (f"{type(e).__name__}: {e}" if recognised else None)
    return _validated(samples, sr, seconds, limits), None


# Leading bytes of container / stream formats FFmpeg reads audio or video from. Only used once decoding
# has failed, to tell a damaged file in a media format (400) from bytes that are no media format (415).
_AV_MAGIC = (
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM
    b"RIFF", b"RIFX", b"RF64",  # WAV, AVI
    b"OggS", b"fLaC", b"FORM", b"caff", b".snd", b"#!AMR", b"wvpk", b"MAC ", b"TTA1", b"ID3", b"FLV",
    b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF / WMA / WMV
    b"\x00\x00\x01", b"\x00\x00\x00\x01",  # MPEG-PS / MPEG-1,2,4 video ES / H.264, HEVC Annex B
)
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


def _looks_like_media(head: bytes) -> bool:
    if head[4:8] in _MP4_BOXES or head.startswith(_AV_MAGIC):
        return True
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio / ADTS frame sync
        return True
    return len(head) > 188 and head[0] == head[188] == 0x47  # MPEG-TS packets


def _head(src: bytes | bytearray | str | os.PathLike | io.BytesIO, n: int = 512) -> bytes:
    if isinstance(src, io.BytesIO):
        return src.getvalue()[:n]
    if isinstance(src, (bytes, bytearray)):
        return bytes(src[:n])
    try:
        with open(src, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _open_av(src, head_of, modality: str):
    """``av.open`` that raises 415 for bytes FFmpeg can't identify and 400 for a damaged media file."""
    import av

    try:
        return av.open(src, mode="r")
    except Exception as e:  # av.error.InvalidDataError and friends
        why = f"{type(e).__name__}: {e}"
        if _looks_like_media(_head(head_of)):
            raise InvalidMediaError(f"cannot decode {modality}: {why}", modality=modality) from None
        raise UnsupportedMediaFormatError(f"not a recognised {modality} format (cannot decode {modality}: {why})",
                                          modality=modality) from None


def decode_audio_av(data: bytes | str | os.PathLike, limits: LimitsConfig,
                    max_seconds: float | None = None) -> Waveform:
    """First audio stream of any container PyAV reads (MP3, MP4/MKV/WebM audio tracks, ...).

    Raises UnsupportedMediaFormatError("no audio stream") when the container has none (a video
    without sound, a JPEG), and for bytes that are no format FFmpeg reads.
    """
    import av

    cap = limits.max_upload_audio_seconds if max_seconds is None else max_seconds
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else str(data)
    container = _open_av(src, data, "audio")
    try:
        with container:
            if not container.streams.audio:
                raise UnsupportedMediaFormatError("no audio stream", modality="audio")
            stream = container.streams.audio[0]
            sr = int(stream.codec_context.sample_rate or stream.rate or 0)
            if sr <= 0:
                raise InvalidMediaError("audio stream has no sample rate", modality="audio")
            known = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                     else container.duration / 1e6 if container.duration else None)
            if known is not None and known > cap:
                raise InvalidMediaError(f"audio is {known:.1f} s long, the limit is {cap:g} s",
                                        modality="audio")
            _check_audio_header(sr, int(stream.codec_context.channels or 0), limits)  # before decoding
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
            keep = int(round(limits.max_audio_seconds * sr))
            chunks, total = [], 0
            for frame in container.decode(stream):
                _check_audio_header(int(frame.sample_rate or sr), frame.layout.nb_channels, limits)
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
    """Mono float32 audio from bytes, a path or ``(waveform, sample_rate)``.

    Bytes neither libsndfile nor FFmpeg read as audio (a JPEG, a text file, a video without an
    audio track) raise ``UnsupportedMediaFormatError`` (415); a damaged file in an audio format
    raises ``InvalidMediaError`` (400), as do sample rates / channel counts outside the limits.
    """
    if isinstance(item, tuple):
        return waveform_from_array(item, limits)
    data = _read_bytes(item, "audio", limits.max_audio_bytes)
    decoded, damaged = _decode_soundfile(data, limits)
    if decoded is not None:
        return decoded
    try:
        return decode_audio_av(data, limits)
    except UnsupportedMediaFormatError:
        if damaged is None:
            raise
        # libsndfile knew the format (WAV, FLAC, ...): a damaged file of it, not an unsupported one
        raise InvalidMediaError(f"cannot decode audio: {damaged}", modality="audio") from None


def _sinc_kernel_elements(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> int:
    """Elements of the kernel ``torchaudio.functional.resample`` builds (and ~4 temporaries of that size).

    It is ``new' x (orig' + 2 width)`` with ``orig' = orig / g``, ``new' = new / g``, ``g = gcd(orig, new)``
    and ``width = ceil(6 orig' / (0.99 min(orig', new')))``: a prime rate makes ``g = 1`` and the kernel
    ``new x orig`` (4001 Hz -> 16 kHz: 64 M elements; 1,000,003 Hz -> 16 kHz: 16 G elements, 64 GB).
    """
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    return n * (o + 2 * math.ceil(lowpass_filter_width * o / (min(o, n) * rolloff)))


def resample_rates(orig: int, new: int) -> tuple[int, int]:
    """The (orig, new) pair to hand torchaudio so its kernel has <= ``MAX_RESAMPLE_KERNEL`` elements.

    Only the ratio ``orig / new`` matters to the resampler. When the exact pair's kernel is small
    (every common rate pair: 44.1/48/22.05/8 kHz to 16/48 kHz) it is used as is. Otherwise the
    ratio ``hi / lo`` (hi = the larger rate) is replaced by the closest fraction ``p / q`` with
    ``q <= 100`` (``Fraction.limit_denominator``): the resampler then treats the input as if
    recorded at ``new * p / q`` Hz instead of ``orig``. The rate error is
    ``|hi/lo - p/q| / (hi/lo) < 1 / (101 (hi/lo)) < 1 %`` (a best approximation with denominator
    <= Q is within ``1 / (q (Q + 1))``), i.e. timing and pitch off by under 1 % (< 17 cents),
    and the kernel has about ``(hi/lo) x 100 x 113`` elements: ~270 k for 384 kHz -> 16 kHz.
    Should a ratio still be too large (rates far outside the limits), smaller ``q`` are tried,
    whose relative error ``< 1 / ((Q + 1) hi/lo)`` stays tiny because ``hi/lo`` is then large.
    """
    if orig == new or _sinc_kernel_elements(orig, new) <= MAX_RESAMPLE_KERNEL:
        return orig, new
    hi, lo = max(orig, new), min(orig, new)
    for q_max in (100, 50, 20, 10, 5, 2, 1):
        ratio = Fraction(hi, lo).limit_denominator(q_max)
        pair = (ratio.numerator, ratio.denominator) if orig > new else (ratio.denominator, ratio.numerator)
        if _sinc_kernel_elements(*pair) <= MAX_RESAMPLE_KERNEL:
            return pair
    raise InvalidMediaError(f"cannot resample {orig} Hz to {new} Hz within the kernel budget", modality="audio")


def resample(wave: Waveform, target_sr: int) -> np.ndarray:
    """``wave`` at ``target_sr``; the resampling kernel is bounded (see ``resample_rates``)."""
    if wave.sample_rate == target_sr:
        return wave.samples
    orig, new = resample_rates(int(wave.sample_rate), int(target_sr))
    if orig == new:  # e.g. 16001 Hz -> 16 kHz: within 1 %, taken as is
        return wave.samples
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(wave.samples), orig, new)
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


def _check_frame_size(width: int, height: int, limits: LimitsConfig) -> None:
    if width * height > limits.max_video_pixels:
        raise MediaTooLargeForBudgetError(f"video frames are {width}x{height} = {width * height} pixels, the "
                                          f"limit is {limits.max_video_pixels} per frame", modality="video")


class _DecodeBudget:
    """Pixels decoded so far for one video, against ``limits.max_video_decode_pixels``."""

    def __init__(self, limits: LimitsConfig):
        self.limits = limits
        self.spent = 0
        self.frames = 0

    def take(self, frame) -> None:
        """Account for one decoded frame (refusing it if it is over the per-frame limit)."""
        _check_frame_size(frame.width, frame.height, self.limits)
        self.spent += frame.width * frame.height
        self.frames += 1

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.limits.max_video_decode_pixels


def _frame_image(frame, max_side: int) -> Image.Image:
    """The frame as an RGB PIL image, scaled by swscale to <= ``max_side`` while converting (no full-size RGB)."""
    width, height = _fit(frame.width, frame.height, max_side)
    if (width, height) == (frame.width, frame.height):
        return frame.to_image().convert("RGB")
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_image()


def read_keyframes(item: Any, n: int, limits: LimitsConfig, max_seconds: float) -> list[Image.Image]:
    """``n`` frames at evenly spaced times ((i + 0.5) / n of the duration), as RGB images.

    Budgets: a stream whose frames are over ``limits.max_video_pixels`` is refused from its header
    (and any decoded frame over it) with ``MediaTooLargeForBudgetError`` (413). Decoding is
    slice-threaded only (frame threading would buffer a frame per thread), each picked frame is
    converted straight to RGB at <= ``limits.image_max_side`` and the full-size frame dropped.
    At most ``limits.max_video_decode_pixels`` pixels (frames x width x height) are decoded per
    video, plus one frame per keyframe target: once the budget is spent, a target takes the
    nearest frame already decoded before it (the keyframe the seek landed on, or the last frame of
    the scan) instead of decoding on to it. So a long GOP or a very long headerless stream degrades
    the choice of keyframes; it does not fail. Bytes FFmpeg can't identify, or a container
    without a video stream, raise ``UnsupportedMediaFormatError`` (415).
    """
    src = video_source(item, limits)
    container = _open_av(src, src, "video")
    try:
        with container:
            if not container.streams.video:
                raise UnsupportedMediaFormatError("no video stream", modality="video")
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"
            _check_frame_size(stream.codec_context.width or 0, stream.codec_context.height or 0, limits)
            duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                        else container.duration / 1e6 if container.duration else None)
            if duration is not None and duration > max_seconds:
                raise InvalidMediaError(f"video is {duration:.1f} s long, the limit is {max_seconds:g} s",
                                        modality="video")
            budget = _DecodeBudget(limits)
            frames = (_seek_frames(container, stream, duration, n, budget) if duration
                      else _scan_frames(container, stream, n, max_seconds, src, budget))
    except InvalidMediaError:
        raise
    except Exception as e:
        raise InvalidMediaError(f"cannot decode video: {type(e).__name__}: {e}", modality="video") from None
    if not frames:
        raise InvalidMediaError("video has no decodable frames", modality="video")
    return frames


def _seek_frames(container, stream, duration: float, n: int, budget: _DecodeBudget) -> list[Image.Image]:
    """Seek to each target time (nearest earlier keyframe) and decode forward to it, within ``budget``.

    The first frame after each seek is always decoded; decoding on towards the target stops once the
    budget is spent, and the target then takes the frame decoded nearest to it: the last one of this
    seek, or the previous target's pick when that one is later (one keyframe, a long GOP).
    """
    max_side = budget.limits.image_max_side
    frames: list[Image.Image] = []
    prev_time = None
    for i in range(n):
        target = (i + 0.5) / n * duration
        container.seek(int(target / stream.time_base) + (stream.start_time or 0), stream=stream,
                       backward=True, any_frame=False)
        chosen = None
        for frame in container.decode(stream):
            budget.take(frame)
            chosen = frame
            if frame.time is None or frame.time >= target or budget.exhausted:
                break
        if chosen is None:
            continue
        short = chosen.time is not None and chosen.time < target  # stopped by the budget (or the stream's end)
        if short and frames and prev_time is not None and prev_time > chosen.time:
            frames.append(frames[-1])
            continue
        frames.append(_frame_image(chosen, max_side))
        prev_time = chosen.time
    return frames


def _scan_frames(container, stream, n: int, max_seconds: float, src, budget: _DecodeBudget) -> list[Image.Image]:
    """No duration in the header: count packets (no decoding), then decode once keeping only the n frames.

    Holding every decoded frame would let a long headerless stream (raw H.264, MJPEG) exhaust memory;
    decoding stops when ``budget`` is spent, the picks not reached yet taking the last frame decoded.
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
    max_side = budget.limits.image_max_side
    idx = [min(total - 1, int((i + 0.5) / n * total)) for i in range(n)]
    wanted, kept, last = set(idx), {}, None
    if isinstance(src, io.BytesIO):
        src.seek(0)
    with av.open(src, mode="r") as again:
        video = again.streams.video[0]
        video.thread_type = "SLICE"
        for i, frame in enumerate(again.decode(video)):
            budget.take(frame)
            last = frame
            if i in wanted:
                kept[i] = _frame_image(frame, max_side)
            if i >= idx[-1] or budget.exhausted:
                break
    if last is None:
        return []
    # decoders may yield fewer frames than packets, and the budget may stop the scan early:
    # the missing picks fall back to the last frame decoded
    fallback = None
    out = []
    for i in idx:
        if i not in kept and fallback is None:
            fallback = _frame_image(last, max_side)
        out.append(kept.get(i, fallback))
    return out


def read_video_audio(item: Any, limits: LimitsConfig, max_seconds: float) -> Waveform | None:
    """The video's audio track (cropped like any audio), or None when it has none."""
    src = video_source(item, limits)
    data = src.getvalue() if isinstance(src, io.BytesIO) else src
    try:
        return decode_audio_av(data, limits, max_seconds=max_seconds)
    except InvalidMediaError as e:
        if e.reason == "no audio stream":
            return None
        raise type(e)(e.reason, modality="video") from None


def decode_batch(batch: Any, decode, modality: str) -> list:
    """Decode every item before any model runs, so a bad item is reported with its index.

    The error keeps its class (and so its HTTP status: 400, 413 or 415).
    """
    if isinstance(batch, (str, bytes)) or not isinstance(batch, (list, tuple)):
        raise InvalidMediaError(f"a batch must be a list, got {type(batch).__name__}", modality=modality)
    out = []
    for i, item in enumerate(batch):
        try:
            out.append(decode(item))
        except InvalidMediaError as e:
            raise type(e)(e.reason, modality=modality, index=i) from None
    return out
