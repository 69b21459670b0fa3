"""hf-audio: tiny CLAP / AST round trips, decoding of every format, crop vs reject, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import audio_bytes, encoder_config, sine, write_mp4
from encoders.errors import EncoderConfigError, InvalidMediaError
from encoders.registry import build_encoder
from mixrec.config import LimitsConfig

LIMITS = LimitsConfig(max_audio_bytes=2_000_000, max_audio_seconds=30, max_upload_audio_seconds=12)
CLIPS = [audio_bytes(220), audio_bytes(440, fmt="FLAC"), audio_bytes(880, fmt="OGG"), (sine(660), 16_000)]


@pytest.fixture(scope="module")
def clap(tiny_model_dirs):
    return build_encoder(encoder_config("hf-audio", "mixrec-tiny-clap", f"local:{tiny_model_dirs['audio']}"), LIMITS)


def check_rows(v: np.ndarray, n: int, dim: int = 32) -> None:
    assert v.shape == (n, dim) and v.dtype == np.float32 and np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel())


def test_local_dir_round_trip(clap):
    original = build_encoder(encoder_config("hf-audio", "mixrec-tiny-clap", seed=7), LIMITS)
    v = clap.encode(CLIPS)
    check_rows(v, 4)
    np.testing.assert_allclose(v, original.encode(CLIPS), atol=1e-5)
    np.testing.assert_allclose(v, np.concatenate([clap.encode([c]) for c in CLIPS]), atol=1e-5)
    np.testing.assert_array_equal(v, clap.encode(CLIPS))
    d = clap.describe()
    assert (d["kind"], d["architecture"], d["dim"], d["trained"], d["text_tower"]) == \
        ("hf-audio", "clap", 32, False, True)


def test_model_store_round_trip(clap, tiny_model_dirs, bentoml_home):
    from tools.cli.models import import_model

    tag = import_model(tiny_model_dirs["audio"], "tiny-clap", "hf-audio")
    enc = build_encoder(encoder_config("hf-audio", "mixrec-tiny-clap", f"bentoml:{tag}"), LIMITS)
    np.testing.assert_allclose(enc.encode(CLIPS), clap.encode(CLIPS), atol=1e-6)
    np.testing.assert_allclose(enc.encode_text(["a dog"]), clap.encode_text(["a dog"]), atol=1e-6)


def test_formats_channels_and_sample_rates_decode_to_the_same_signal(clap, tmp_path):
    ref = clap.encode([(sine(440, 2.0), 16_000)])
    variants = [audio_bytes(440, 2.0), audio_bytes(440, 2.0, fmt="FLAC"), audio_bytes(440, 2.0, channels=2),
                audio_bytes(440, 2.0, sr=44_100), audio_bytes(440, 2.0, fmt="MP3")]
    path = tmp_path / "a.wav"
    path.write_bytes(variants[0])
    v = clap.encode(variants + [path])
    for row in v:
        assert cos(row, ref) > 0.98
    video = write_mp4(tmp_path / "v.mp4", seconds=2.0, audio_freq=440)  # audio track via PyAV
    assert cos(clap.encode([video.read_bytes()]), ref) > 0.9


def test_long_clip_is_cropped_longer_upload_rejected(clap):
    window = clap.describe()["max_seconds"]  # the tiny CLAP's 5 s input window
    long_clip = np.concatenate([sine(300, window), sine(1200, 4.0)])
    np.testing.assert_allclose(clap.encode([(long_clip, 16_000)]), clap.encode([(sine(300, window), 16_000)]),
                               atol=1e-5)
    with pytest.raises(InvalidMediaError, match="limit is 12 s"):
        clap.encode([audio_bytes(300, 13.0)])


def test_silent_audio_is_valid_and_finite(clap):
    check_rows(clap.encode([(np.zeros(16_000, np.float32), 16_000), (np.zeros(100, np.float32), 8_000)]), 2)


def test_clap_text_tower(clap):
    t = clap.encode_text(["a dog barking", "rain on a window"])
    check_rows(t, 2)
    assert not np.allclose(t[0], t[1])


def test_ast_preset_swaps_architecture_by_config():
    ast = build_encoder(encoder_config("hf-audio", "mixrec-tiny-ast"), LIMITS)
    v = ast.encode(CLIPS)
    check_rows(v, 4)
    np.testing.assert_allclose(v, np.concatenate([ast.encode([c]) for c in CLIPS]), atol=1e-5)
    assert ast.describe()["architecture"] == "audio-spectrogram-transformer" and not ast.has_text_tower


@pytest.mark.parametrize("bad, reason", [
    (b"", "empty"),
    (b"RIFF....WAVEfmt garbage", "cannot decode"),
    (audio_bytes(440)[:30], "cannot decode"),  # cut inside the header
    (audio_bytes(440)[:60], "too short"),  # cut after 8 samples
    (b"x" * 2_000_001, "limit is 2000000"),
    ((np.zeros(0, np.float32), 16_000), "no samples"),
    ((np.r_[sine(440), np.nan].astype(np.float32), 16_000), "NaN"),
    ((sine(440), 0), "sample rate"),
    ((sine(440),), "expected (waveform, sample_rate)"),
    ("/no/such/clip.wav", "file not found"),
    (3.5, "expected encoded bytes"),
])
def test_bad_audio_names_index_and_next_call_works(clap, bad, reason):
    with pytest.raises(InvalidMediaError) as err:
        clap.encode([CLIPS[0], bad])
    assert (err.value.modality, err.value.index) == ("audio", 1)
    assert reason in err.value.reason
    check_rows(clap.encode(CLIPS[:1]), 1)


def test_video_without_audio_track_is_rejected_as_audio(clap, tmp_path):
    video = write_mp4(tmp_path / "silent.mp4", audio_freq=None)
    with pytest.raises(InvalidMediaError, match="no audio stream"):
        clap.encode([video])


def test_random_needs_a_preset():
    with pytest.raises(EncoderConfigError, match="mixrec-tiny-clap"):
        build_encoder(encoder_config("hf-audio", "laion/clap-htsat-unfused", "random"))
