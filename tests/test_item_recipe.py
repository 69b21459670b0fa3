"""One item -> vectors recipe offline and online, and one batched encoder call per modality online.

The online side runs the Recommender's own methods (``_items_vectors``, ``_query_vectors``) with the
encoder dependencies replaced by in-process services that decode and encode exactly as the
encoder services do (services/encoder_runtime.py) and count their calls.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from conftest import audio_bytes, image_bytes, write_mp4
from encoders.media import read_keyframes
from mixrec.catalog import Item, write_items
from mixrec.config import config_from_dict


def _config():
    return config_from_dict({"encoders": {
        "text": {"kind": "hf-text", "model": "mixrec-tiny-bert", "weights": "random", "device": "cpu"},
        "image": {"kind": "open-clip", "model": "mixrec-tiny-clip", "weights": "random", "device": "cpu"},
        "audio": {"kind": "hf-audio", "model": "mixrec-tiny-clap", "weights": "random", "device": "cpu"},
    }, "video": {"keyframes": 2}, "serving": {"max_query_files": 8}}, environ={})


class _Served:
    """An encoder service in-process: the same decoding and batch encoding, every call recorded."""

    def __init__(self, encoder, media: bool) -> None:
        self.encoder, self.media, self.calls = encoder, media, []
        self.to_async = self

    async def encode(self, payload: list) -> np.ndarray:
        from services.encoder_runtime import b64decode, encode_batch

        self.calls.append(len(payload))
        items = [b64decode(s, i, self.encoder.modality) for i, s in enumerate(payload)] if self.media else payload
        return encode_batch(self.encoder, items)


@pytest.fixture(scope="module")
def setup():
    from encoders.encode_catalog import CatalogEncoders

    cfg = _config()
    return cfg, CatalogEncoders.from_config(cfg)


def _online(cfg, enc):
    """A Recommender whose encoder dependencies are the in-process services above (no engine needed)."""
    from services.encoder_client import EncoderClient
    from services.recommender import Recommender

    rec = Recommender.inner.__new__(Recommender.inner)
    rec.cfg, rec.limits = cfg, cfg.limits
    served = {"text": _Served(enc.text, False), "image": _Served(enc.image, True), "audio": _Served(enc.audio, True)}
    rec.__dict__["encoders"] = EncoderClient(served)
    return rec, served


def _spec(item_id, type_, title, **kw):
    from services.schemas import ItemIn

    return ItemIn(item_id=item_id, type=type_, title=title, **kw)


def test_offline_and_online_give_the_same_vectors_and_explicit_media_win(tmp_path, setup):
    from encoders.encode_catalog import encode_catalog

    cfg, enc = setup
    media = tmp_path / "media"
    media.mkdir()
    png, wav = image_bytes((20, 200, 40)), audio_bytes(330)
    mp4 = write_mp4(tmp_path / "clip.mp4", seconds=1.0).read_bytes()
    for name, data in (("p.png", png), ("a.wav", wav), ("v.mp4", mp4)):
        (media / name).write_bytes(data)
    items = [Item(item_id="both", type="video", title="Photo and clip", image="media/p.png", video="media/v.mp4"),
             Item(item_id="all3", type="video", title="Everything", image="media/p.png", audio="media/a.wav",
                  video="media/v.mp4"),
             Item(item_id="vid", type="video", title="Clip only", video="media/v.mp4")]
    write_items(tmp_path, items)
    offline, _ = encode_catalog(cfg, tmp_path, progress=False, encoders=enc)

    rec, _ = _online(cfg, enc)
    specs = [(_spec("both", "video", "Photo and clip"), png, None, mp4),
             (_spec("all3", "video", "Everything"), png, wav, mp4),
             (_spec("vid", "video", "Clip only"), None, None, mp4)]
    online = asyncio.run(rec._items_vectors(specs))

    for row, vecs in enumerate(online):
        assert set(vecs) == {m for m in ("text", "image", "audio") if offline.masks[m][row]}
        for m, v in vecs.items():
            np.testing.assert_allclose(v, offline.vectors[m][row], atol=1e-5, err_msg=f"{items[row].item_id} {m}")
    # the rule itself: an explicit image wins over the video's keyframes; the video fills the audio
    own_image = enc.image.encode([png])[0]
    frames = enc.image.encode(read_keyframes(mp4, 2, cfg.limits, 600)).mean(axis=0)
    np.testing.assert_allclose(offline.vectors["image"][0], own_image, atol=1e-5)
    assert not np.allclose(offline.vectors["image"][0], frames / np.linalg.norm(frames), atol=1e-3)
    np.testing.assert_allclose(offline.vectors["image"][2], frames / np.linalg.norm(frames), atol=1e-5)
    assert offline.masks["audio"][0] and offline.masks["audio"][2]
    np.testing.assert_allclose(offline.vectors["audio"][1], enc.audio.encode([wav])[0], atol=1e-5)


def test_add_items_makes_one_call_per_modality_not_one_per_item(setup):
    cfg, enc = setup
    rec, served = _online(cfg, enc)
    specs = [(_spec(f"t{i}", "product", f"Text only {i}"), None, None, None) for i in range(32)]
    specs += [(_spec("img", "product", "With a photo"), image_bytes(), None, None),
              (_spec("hum", "audio", "With a clip"), None, audio_bytes(220), None)]
    out = asyncio.run(rec._items_vectors(specs))
    assert len(out) == 34 and set(out[32]) == {"text", "image"} and set(out[33]) == {"text", "audio"}
    assert {m: s.calls for m, s in served.items()} == {"text": [34], "image": [1], "audio": [1]}


def test_a_query_with_four_images_is_one_image_call(setup):
    cfg, enc = setup
    rec, served = _online(cfg, enc)
    images = [image_bytes((40 * i, 10, 10)) for i in range(4)]
    vecs = asyncio.run(rec._query_vectors("red things", images, [audio_bytes(440)]))
    assert {m: s.calls for m, s in served.items()} == {"text": [1], "image": [4], "audio": [1]}
    each = enc.image.encode(images)
    mean = each.mean(axis=0)
    np.testing.assert_allclose(vecs["image"], mean / np.linalg.norm(mean), atol=1e-5)


def test_modalities_run_concurrently(setup):
    """The image call starts before the text call has answered (asyncio.gather, not one after another)."""
    from services.encoder_client import EncoderClient

    order = []

    class Slow:
        def __init__(self, name):
            self.name, self.to_async = name, self

        async def encode(self, payload):
            order.append(f"start {self.name}")
            await asyncio.sleep(0.05)
            order.append(f"end {self.name}")
            return np.zeros((len(payload), 2), np.float32)

    client = EncoderClient({m: Slow(m) for m in ("text", "image", "audio")})
    out = asyncio.run(client.encode_all({"text": ["a"], "image": ["x", "y"], "audio": []}))
    assert out["image"].shape == (2, 2) and "audio" not in out
    assert order[:2] == ["start text", "start image"]


def test_a_bad_item_is_named_and_no_encoder_is_called(setup):
    from mixrec.errors import InputError

    cfg, enc = setup
    rec, served = _online(cfg, enc)
    specs = [(_spec("ok", "product", "Fine"), image_bytes(), None, None),
             (_spec("broken", "product", "Bad photo"), b"not an image", None, None)]
    with pytest.raises(InputError, match=r"item 'broken' \(index 1\)") as err:
        asyncio.run(rec._items_vectors(specs))
    assert err.value.status in (400, 415)
    assert all(not s.calls for s in served.values())
