"""open-clip: tiny CLIP round trips (local dir, checkpoint file, model store), seeding, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import encoder_config, image_bytes
from encoders.errors import EncoderConfigError, InvalidMediaError
from encoders.registry import build_encoder
from mixrec.config import LimitsConfig

IMAGES = [image_bytes((200, 30, 30)), image_bytes((30, 200, 30), size=(90, 30)), image_bytes((10, 10, 10), fmt="JPEG")]


@pytest.fixture(scope="module")
def clip(tiny_model_dirs):
    limits = LimitsConfig(max_image_bytes=200_000, max_image_pixels=1_000_000)
    return build_encoder(encoder_config("open-clip", "mixrec-tiny-clip", f"local:{tiny_model_dirs['image']}"), limits)


def check_rows(v: np.ndarray, n: int, dim: int = 64) -> None:
    assert v.shape == (n, dim) and v.dtype == np.float32 and np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_local_dir_round_trip_matches_the_saved_model(clip):
    original = build_encoder(encoder_config("open-clip", "mixrec-tiny-clip", seed=7))
    v = clip.encode(IMAGES)
    check_rows(v, 3)
    np.testing.assert_allclose(v, original.encode(IMAGES), atol=1e-6)
    np.testing.assert_allclose(v, np.concatenate([clip.encode([x]) for x in IMAGES]), atol=1e-5)
    assert not np.allclose(v[0], v[1])
    d = clip.describe()
    assert (d["kind"], d["dim"], d["dtype"], d["trained"], d["image_size"]) == ("open-clip", 64, "float32", False, 64)


def test_bytes_path_and_pil_inputs_agree(clip, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(IMAGES[0])
    v = clip.encode([IMAGES[0], path, str(path), Image.open(io.BytesIO(IMAGES[0]))])
    np.testing.assert_allclose(v, np.repeat(v[:1], 4, axis=0), atol=1e-6)


def test_checkpoint_file_and_model_store(clip, tiny_model_dirs, bentoml_home):
    from tools.cli.models import import_model

    ckpt = tiny_model_dirs["image"] / "open_clip_model.safetensors"
    by_file = build_encoder(encoder_config("open-clip", "mixrec-tiny-clip", f"local:{ckpt}"))
    np.testing.assert_allclose(by_file.encode(IMAGES), clip.encode(IMAGES), atol=1e-6)
    tag = import_model(tiny_model_dirs["image"], "tiny-clip", "open-clip")
    by_tag = build_encoder(encoder_config("open-clip", "mixrec-tiny-clip", f"bentoml:{tag}"))
    np.testing.assert_allclose(by_tag.encode(IMAGES), clip.encode(IMAGES), atol=1e-6)


def test_random_weights_are_seeded():
    a = build_encoder(encoder_config("open-clip", "mixrec-tiny-clip", seed=1)).encode(IMAGES[:1])
    b = build_encoder(encoder_config("open-clip", "mixrec-tiny-clip", seed=1)).encode(IMAGES[:1])
    c = build_encoder(encoder_config("open-clip", "mixrec-tiny-clip", seed=2)).encode(IMAGES[:1])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_text_tower_maps_into_image_space(clip):
    t = clip.encode_text(["a red square", "a green field"])
    check_rows(t, 2)
    assert clip.has_text_tower
    with pytest.raises(InvalidMediaError, match="batch index 1"):
        clip.encode_text(["ok", "  "])


def test_unknown_architecture_and_bad_dir_are_config_errors(tmp_path):
    with pytest.raises(EncoderConfigError, match="no-such-arch"):
        build_encoder(encoder_config("open-clip", "no-such-arch"))
    with pytest.raises(EncoderConfigError, match="open_clip_config.json"):
        build_encoder(encoder_config("open-clip", "mixrec-tiny-clip", f"local:{tmp_path}"))


def _png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")  # compresses to almost nothing: a "bomb"
    return buf.getvalue()


@pytest.mark.parametrize("bad, reason", [
    (IMAGES[0][: len(IMAGES[0]) // 2], "corrupt or truncated"),
    (b"definitely not an image", "not a recognised image format"),
    (b"", "empty"),
    (_png((2000, 2000)), "pixels"),
    (b"\x89PNG" + b"\x00" * 300_000, "limit is 200000"),
    (42, "expected encoded bytes"),
    ("/no/such/file.png", "file not found"),
    (np.zeros((4, 4, 3)), "expected encoded bytes"),
])
def test_bad_images_name_index_and_next_call_works(clip, bad, reason):
    with pytest.raises(InvalidMediaError) as err:
        clip.encode([IMAGES[0], IMAGES[1], bad])
    assert (err.value.modality, err.value.index) == ("image", 2)
    assert reason in err.value.reason
    check_rows(clip.encode(IMAGES[:1]), 1)


def test_oversized_pil_image_is_rejected(clip):
    with pytest.raises(InvalidMediaError, match="pixels"):
        clip.encode([Image.new("RGB", (1200, 1000))])
