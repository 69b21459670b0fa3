"""Video keyframes + audio track, and encoding a whole catalog directory (npz + CLI)."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from conftest import audio_bytes, encoder_config, image_bytes, write_mp4
from encoders.errors import InvalidMediaError
from encoders.media import read_keyframes
from encoders.registry import build_encoder
from encoders.video import VideoEncoder
from mixrec.config import LimitsConfig, config_from_dict
from mixrec.embeddings import ItemEmbeddings


@pytest.fixture(scope="module")
def towers():
    return (build_encoder(encoder_config("open-clip", "mixrec-tiny-clip")),
            build_encoder(encoder_config("hf-audio", "mixrec-tiny-clap")))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {"with_audio": write_mp4(d / "a.mp4", seconds=1.0), "no_audio": write_mp4(d / "b.mp4", audio_freq=None),
            "long": write_mp4(d / "c.mp4", seconds=3.0, audio_freq=None)}


def test_keyframes_and_audio_track(towers, videos):
    image, audio = towers
    enc = VideoEncoder(image, audio, keyframes=3)
    out = enc.encode([videos["with_audio"], videos["no_audio"], videos["with_audio"].read_bytes()])
    assert out.image.shape == (3, 64) and out.audio.shape == (3, 32)
    np.testing.assert_array_equal(out.audio_mask, [True, False, True])
    np.testing.assert_allclose(np.linalg.norm(out.image, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out.audio[1], 0.0)  # masked slot carries no data
    np.testing.assert_allclose(out.image[0], out.image[2], atol=1e-6)  # path and bytes agree
    frames = read_keyframes(videos["with_audio"], 3, LimitsConfig(), 600)
    mean = image.encode(frames).mean(axis=0)
    np.testing.assert_allclose(out.image[0], mean / np.linalg.norm(mean), atol=1e-5)


def test_keyframes_are_spread_over_the_video(videos):
    frames = read_keyframes(videos["long"], 4, LimitsConfig(), 600)
    reds = [np.asarray(f)[0, 0, 0] for f in frames]
    assert len(frames) == 4 and reds == sorted(reds) and reds[-1] - reds[0] > 120


@pytest.mark.parametrize("bad, reason", [(b"not a video at all", "cannot decode"), (b"", "empty"),
                                         (7, "expected encoded bytes")])
def test_bad_video_names_index_and_next_call_works(towers, videos, bad, reason):
    enc = VideoEncoder(*towers, keyframes=2)
    with pytest.raises(InvalidMediaError) as err:
        enc.encode([videos["no_audio"], bad])
    assert (err.value.modality, err.value.index) == ("video", 1) and reason in err.value.reason
    assert enc.encode([videos["no_audio"]]).image.shape == (1, 64)


def test_too_long_video_is_rejected(towers, videos):
    enc = VideoEncoder(*towers, keyframes=2, max_seconds=2.0)
    with pytest.raises(InvalidMediaError, match="limit is 2 s"):
        enc.encode([videos["long"]])


def _catalog(tmp_path, videos):
    from mixrec.catalog import Item, write_items

    media = tmp_path / "media"
    media.mkdir(parents=True)
    (media / "p1.png").write_bytes(image_bytes((250, 0, 0)))
    (media / "bad.png").write_bytes(b"corrupt")
    (media / "s1.wav").write_bytes(audio_bytes(330))
    (media / "v1.mp4").write_bytes(videos["with_audio"].read_bytes())
    (media / "v2.mp4").write_bytes(videos["no_audio"].read_bytes())
    write_items(tmp_path, [
        Item(item_id="p1", type="product", title="Red lamp", tags=["home"], image="media/p1.png"),
        Item(item_id="p2", type="product", title="Broken picture", image="media/bad.png"),
        Item(item_id="s1", type="audio", title="Low hum", audio="media/s1.wav"),
        Item(item_id="v1", type="video", title="Colour ramp", video="media/v1.mp4"),
        Item(item_id="v2", type="video", title="Silent ramp", video="media/v2.mp4"),
        Item(item_id="t1", type="product", title="Text only"),
    ])
    return tmp_path


def _tiny_config():
    return config_from_dict({"encoders": {
        "text": {"kind": "hf-text", "model": "mixrec-tiny-bert", "weights": "random", "device": "cpu"},
        "image": {"kind": "open-clip", "model": "mixrec-tiny-clip", "weights": "random", "device": "cpu"},
        "audio": {"kind": "hf-audio", "model": "mixrec-tiny-clap", "weights": "random", "device": "cpu"},
    }, "video": {"keyframes": 2}}, environ={})


def test_encode_catalog_masks_and_stats(tmp_path, videos):
    from encoders.encode_catalog import encode_catalog

    emb, stats = encode_catalog(_tiny_config(), _catalog(tmp_path, videos), progress=False)
    assert emb.item_ids == ["p1", "p2", "s1", "v1", "v2", "t1"]
    assert emb.dims() == {"text": 32, "image": 64, "audio": 32}
    np.testing.assert_array_equal(emb.masks["text"], [True] * 6)
    np.testing.assert_array_equal(emb.masks["image"], [True, False, False, True, True, False])
    np.testing.assert_array_equal(emb.masks["audio"], [False, False, True, True, False, False])
    assert stats["skipped"] == [{"item_id": "p2", "modality": "image", "reason": "not a recognised image format"}]
    assert stats["image"]["count"] == 1 and stats["video"]["count"] == 2 and stats["text"]["items_per_s"] > 0
    assert emb.encoders["image"]["kind"] == "open-clip" and emb.encoders["audio"]["trained"] is False
    emb.save(tmp_path / "emb.npz")
    back = ItemEmbeddings.load(tmp_path / "emb.npz")
    np.testing.assert_array_equal(back.vectors["image"], emb.vectors["image"])


def test_encode_cli_writes_npz_and_table(tmp_path, videos, monkeypatch):
    from tools.cli import encode as encode_cli

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        "encoders:\n"
        "  text: {kind: hf-text, model: mixrec-tiny-bert, weights: random}\n"
        "  image: {kind: open-clip, model: mixrec-tiny-clip, weights: random}\n"
        "  audio: {kind: hf-audio, model: mixrec-tiny-clap, weights: random}\n")
    app = typer.Typer()
    encode_cli.register(app)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    catalog = _catalog(tmp_path / "cat", videos)
    res = CliRunner().invoke(app, ["encode", "--config", str(cfg_path), "--catalog-dir", str(catalog),
                                   "--out", str(tmp_path / "out.npz"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "items/s" in res.output and "skipped" in res.output
    assert len(ItemEmbeddings.load(tmp_path / "out.npz")) == 6
