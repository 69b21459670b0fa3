"""Decoded-size budgets for untrusted media: tiny uploads must not cost GBs (encoders/media.py).

Each test feeds an input that cost an encoder worker GBs or seconds before these budgets existed
(a 244-byte WAV at a prime sample rate, a PNG header claiming 36 Mpx, a 6000x6000 MP4) and checks
the refusal or the bounded fast path, so none of them allocates what the attack asked for.
All inputs are generated here.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from conftest import audio_bytes, image_bytes, write_mp4
from encoders import media
from encoders.errors import InvalidMediaError, MediaTooLargeForBudgetError, UnsupportedMediaFormatError
from mixrec.config import LimitsConfig

LIMITS = LimitsConfig()


# ---------------------------------------------------------------- generators

def wav(sr: int, frames: int = 100, channels: int = 1) -> bytes:
    """A PCM16 WAV whose header says ``sr`` Hz and ``channels`` channels (100 mono frames: 244 bytes)."""
    data = (np.sin(np.arange(frames * channels) / 7) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, sr, (sr * channels * 2) & 0xFFFFFFFF, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_header(width: int, height: int) -> bytes:
    """A PNG that is only a valid header claiming width x height RGB pixels (a few dozen bytes)."""
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def picture(size, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    w, h = size
    yy, xx = np.indices((h, w))
    rgb = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)), (xx ^ yy) & 255], -1)
    img = Image.fromarray(rgb.astype(np.uint8), "RGB")
    img = img.convert(mode) if mode != "P" else img.quantize(64)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def video(size=(64, 48), frames: int = 30, fmt: str = "mp4", gop: int | None = None, blank: bool = False) -> bytes:
    """An MPEG-4 part 2 video (red ramps 0 -> 255 over the frames); ``blank`` frames encode fastest."""
    import av

    w, h = size
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if gop:
            s.codec_context.gop_size = gop
        for i in range(frames):
            if blank:
                frame = av.VideoFrame(w, h, "yuv420p")
                for plane in frame.planes:
                    plane.update(bytes([128]) * plane.buffer_size)
            else:
                arr = np.full((h, w, 3), (int(255 * i / max(1, frames - 1)), 80, 40), np.uint8)
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def reds(frames) -> list[int]:
    return [int(np.asarray(f)[0, 0, 0]) for f in frames]


# ---------------------------------------------------------------- audio: sample rate, channels, samples

@pytest.fixture
def kernel_spy(monkeypatch):
    """Records the size of every resampling kernel torchaudio is asked for, and refuses (without
    allocating) any over the budget: on unbounded code a 4001 Hz clip asks for 64 M elements."""
    import torchaudio.functional.functional as F

    real, sizes = F._get_sinc_resample_kernel, []

    def spy(orig, new, gcd, *args, **kw):
        elements = _elements(orig, new)
        sizes.append(elements)
        assert elements <= 1 << 20, f"resampling kernel of {elements} elements for {orig} -> {new} Hz"
        return real(orig, new, gcd, *args, **kw)

    monkeypatch.setattr(F, "_get_sinc_resample_kernel", spy)
    return sizes


def _elements(orig: int, new: int) -> int:
    """Elements of torchaudio's sinc kernel: new' x (orig' + 2 width), primes = divided by the gcd."""
    import math

    g = math.gcd(int(orig), int(new))
    o, n = int(orig) // g, int(new) // g
    return n * (o + 2 * math.ceil(6 * o / (min(o, n) * 0.99)))


def test_prime_sample_rate_resamples_with_a_small_kernel(kernel_spy):
    data = wav(4001)  # the 244-byte attack clip: +1 GB and seconds before the kernel was bounded
    assert len(data) == 244
    wave = media.decode_audio(data, LIMITS)
    t = time.perf_counter()
    out = media.resample(wave, 16_000)
    assert time.perf_counter() - t < 1.0
    assert kernel_spy and max(kernel_spy) <= media.MAX_RESAMPLE_KERNEL
    assert abs(out.size - 100 * 16_000 / 4001) <= 0.01 * out.size + 1  # timing within 1 %
    assert np.isfinite(out).all()


def test_resampling_rates_stay_exact_for_common_pairs_and_within_1_percent_otherwise():
    for pair in [(44_100, 16_000), (48_000, 16_000), (22_050, 48_000), (8_000, 48_000), (384_000, 16_000)]:
        assert media.resample_rates(*pair) == pair
    for orig in (4001, 7919, 44_101, 99_991, 383_999):
        for new in (16_000, 48_000):
            o, n = media.resample_rates(orig, new)
            assert media._sinc_kernel_elements(o, n) <= media.MAX_RESAMPLE_KERNEL
            assert abs(o / n - orig / new) / (orig / new) < 0.01


@pytest.mark.parametrize("rate", [1_000_003, 2_147_483_647, 3_999, 384_001])
def test_sample_rate_outside_the_limits_is_refused_from_the_header(rate):
    media.decode_audio_av(wav(16_000, 400), LIMITS)  # warm up lazy imports before measuring
    media.decode_audio(wav(16_000, 400), LIMITS)
    tracemalloc.start()
    try:
        for decode in (media.decode_audio, media.decode_audio_av):  # libsndfile and PyAV paths
            with pytest.raises(InvalidMediaError) as err:
                decode(wav(rate), LIMITS)
            assert f"{rate} Hz" in err.value.reason and "4000..384000" in err.value.reason
            assert err.value.status == 400
        with pytest.raises(InvalidMediaError, match=f"{rate} Hz"):  # (waveform, sample_rate)
            media.decode_audio((np.zeros(1000, np.float32), rate), LIMITS)
        assert tracemalloc.get_traced_memory()[1] < 2**20  # nothing sized by the rate
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("channels", [17, 1000])
def test_channel_count_over_the_limit_is_refused(channels):
    with pytest.raises(InvalidMediaError, match=f"{channels} channels, the limit is 16"):
        media.decode_audio(wav(16_000, 400, channels), LIMITS)
    with pytest.raises(InvalidMediaError, match="channels, the limit is 16"):
        media.decode_audio((np.zeros((400, channels), np.float32), 16_000), LIMITS)


def test_pyav_path_refuses_too_many_channels():
    with pytest.raises(InvalidMediaError, match="17 channels, the limit is 16"):
        media.decode_audio_av(wav(16_000, 400, 17), LIMITS)


def test_many_channel_audio_is_read_in_blocks():
    """16 channels x 6 s: one frames x channels float32 buffer would be 18 MiB (plus the raw bytes read)."""
    data = wav(48_000, 48_000 * 6, 16)
    tracemalloc.start()
    try:
        wave = media.decode_audio(data, LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wave.samples.shape == (48_000 * 6,) and wave.sample_rate == 48_000
    block = media.AUDIO_BLOCK_FRAMES * 16 * 4
    assert peak < 3 * block + 2 * wave.samples.nbytes, peak / 2**20  # block + libsndfile's read buffers


def test_mono_mixdown_is_unchanged_by_block_reads():
    data = audio_bytes(440, seconds=2.0, sr=48_000, channels=2)
    import soundfile as sf

    ref, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(media.decode_audio(data, LIMITS).samples, ref.mean(axis=1))


# ---------------------------------------------------------------- images: decode budget, draft, downscale

def test_png_claiming_more_pixels_than_the_decode_budget_is_413_before_decoding():
    data = png_header(6000, 6000)  # 36 Mpx: under the 40 Mpx header limit, over the 16.7 Mpx decode budget
    with pytest.raises(MediaTooLargeForBudgetError) as err:
        media.decode_image(data, LIMITS)
    assert err.value.status == 413
    assert "36000000" in err.value.reason and "16777216" in err.value.reason
    with pytest.raises(InvalidMediaError, match="pixels") as err:  # header guard: still a 400
        media.decode_image(png_header(7000, 7000), LIMITS)
    assert err.value.status == 400


def test_big_jpeg_decodes_in_draft_mode_within_the_budget():
    limits = LimitsConfig(max_decoded_image_pixels=1_000_000, image_max_side=256)
    data = picture((2048, 1536), fmt="JPEG")  # 3.1 Mpx > budget, but libjpeg decodes it at 1/4 scale
    img = media.decode_image(data, limits)
    assert img.mode == "RGB" and img.size == (256, 192)
    with pytest.raises(MediaTooLargeForBudgetError, match="3145728"):  # a PNG can't be drafted
        media.decode_image(picture((2048, 1536)), limits)


@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"),
                                       ("RGB", "JPEG")])
def test_images_are_downscaled_to_max_side_and_the_decode_is_idempotent(mode, fmt):
    limits = LimitsConfig(image_max_side=64)
    data = picture((300, 200), mode, fmt)
    img = media.decode_image(data, limits)
    assert img.mode == "RGB" and img.size == (64, 43)
    again = media.image_for_encoder(data, limits)
    assert again.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(media.decode_image(again, limits)), np.asarray(img))
    np.testing.assert_array_equal(np.asarray(media.decode_image(media.image_for_encoder(again, limits), limits)),
                                  np.asarray(img))
    pil = media.decode_image(Image.open(io.BytesIO(again)), limits)  # a PIL input takes the same path
    np.testing.assert_array_equal(np.asarray(pil), np.asarray(img))


def test_small_images_are_left_as_they_are():
    data = image_bytes(size=(48, 40))
    img = media.decode_image(data, LIMITS)
    np.testing.assert_array_equal(np.asarray(img), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


# ---------------------------------------------------------------- video: frame size, downscale, decode budget

def test_video_frames_over_the_pixel_limit_are_413_before_decoding():
    data = video((4096, 2160), frames=2, blank=True)  # just over 3840x2160; ~100 KB
    t = time.perf_counter()
    with pytest.raises(MediaTooLargeForBudgetError) as err:
        media.read_keyframes(data, 4, LIMITS, 600)
    assert time.perf_counter() - t < 0.5
    assert err.value.status == 413 and "8847360" in err.value.reason and "8294400" in err.value.reason
    small = video((320, 240), frames=5)
    with pytest.raises(MediaTooLargeForBudgetError, match="76800"):
        media.read_keyframes(small, 2, LimitsConfig(max_video_pixels=50_000), 600)


@pytest.mark.parametrize("fmt", ["mp4", "m4v"])  # m4v: no duration in the header -> the scan path
def test_keyframes_are_downscaled_as_they_are_decoded(fmt):
    frames = media.read_keyframes(video((320, 240), frames=10, fmt=fmt), 3, LimitsConfig(image_max_side=64), 600)
    assert len(frames) == 3
    assert all(f.mode == "RGB" and f.size == (64, 48) for f in frames)


@pytest.fixture
def budget_spy(monkeypatch):
    """The decode budgets read_keyframes makes (none on code without one: the test then fails on its frames)."""
    made = []
    base = getattr(media, "_DecodeBudget", None)
    if base is not None:
        class Spy(base):
            def __init__(self, limits):
                super().__init__(limits)
                made.append(self)

        monkeypatch.setattr(media, "_DecodeBudget", Spy)
    return made


@pytest.mark.parametrize("fmt", ["mp4", "m4v"])
def test_decode_budget_degrades_keyframe_choice_instead_of_failing(budget_spy, fmt):
    data = video((64, 48), frames=30, fmt=fmt, gop=100)  # one long GOP: seeking means decoding on
    spread = media.read_keyframes(data, 4, LIMITS, 600)
    assert reds(spread) == sorted(reds(spread)) and reds(spread)[-1] - reds(spread)[0] > 120
    frame = 64 * 48
    limits = LimitsConfig(max_video_decode_pixels=6 * frame)
    frames = media.read_keyframes(data, 4, limits, 600)
    assert len(frames) == 4 and max(reds(frames)) < 100  # early frames: decoding stopped
    spent = budget_spy[-1].spent
    assert spent <= limits.max_video_decode_pixels + 4 * frame


# ---------------------------------------------------------------- 415 for bytes that are not the modality's format

def test_unsupported_formats_are_415_and_damaged_ones_400(tmp_path):
    mp4 = write_mp4(tmp_path / "v.mp4", audio_freq=None).read_bytes()
    png = image_bytes()
    jpeg = image_bytes(fmt="JPEG")
    cases = [
        (media.decode_image, b"definitely not an image", 415),
        (media.decode_image, mp4, 415),
        (media.decode_image, png[: len(png) // 2], 400),  # truncated PNG
        (media.decode_image, jpeg[:24] + bytes(range(256)) * 8, 400),  # JPEG with a damaged header
        (media.decode_audio, jpeg, 415),
        (media.decode_audio, b"hello, this is a text file\n" * 10, 415),
        (media.decode_audio, mp4, 415),  # a video without an audio track, sent as audio
        (media.decode_audio, b"RIFF....WAVEfmt garbage", 400),
        (media.decode_audio, audio_bytes(440)[:30], 400),  # WAV cut inside its header
        (lambda d, lim: media.read_keyframes(d, 2, lim, 600), b"not a video at all", 415),
        (lambda d, lim: media.read_keyframes(d, 2, lim, 600), audio_bytes(440), 415),  # no video stream
        (lambda d, lim: media.read_keyframes(d, 2, lim, 600), b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500, 400),
    ]
    for decode, data, status in cases:
        with pytest.raises(InvalidMediaError) as err:
            decode(data, LIMITS)
        assert err.value.status == status, (data[:24], err.value)
        assert isinstance(err.value, UnsupportedMediaFormatError) == (status == 415)


def test_decode_batch_keeps_the_error_class_and_names_the_index():
    with pytest.raises(UnsupportedMediaFormatError) as err:
        media.decode_batch([image_bytes(), b"plain text"], lambda x: media.decode_image(x, LIMITS), "image")
    assert (err.value.status, err.value.index, err.value.modality) == (415, 1, "image")
    with pytest.raises(MediaTooLargeForBudgetError) as err:
        media.decode_batch([png_header(6000, 6000)], lambda x: media.decode_image(x, LIMITS), "image")
    assert (err.value.status, err.value.index) == (413, 0)
    assert type(err.value.at(index=3)) is MediaTooLargeForBudgetError
