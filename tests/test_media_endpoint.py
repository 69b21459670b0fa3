"""GET /media/{item_id}/{kind} reads only inside the media store or the catalogue's media folder."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from PIL import Image

from mixrec.catalog import Item
from mixrec.errors import InputError, NotFoundError
from mixrec.storage.media import MediaStore
from services.ui import media


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


class _Store:
    def __init__(self, items):
        self.items = {it.item_id: it for it in items}

    def get_items(self, ids):
        return [self.items[i] for i in ids if i in self.items]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    catalog = tmp_path / "catalog"
    (catalog / "media" / "images").mkdir(parents=True)
    (catalog / "media" / "images" / "p1.png").write_bytes(_png())
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    (catalog / "media" / "images" / "link.png").symlink_to(secret)
    monkeypatch.setenv(media.CATALOG_ENV, str(catalog))
    store = MediaStore(tmp_path / "store", 1024 * 1024)
    uploaded = store.save(_png(), "image")
    items = [Item(item_id="p1", type="product", title="t", image="media/images/p1.png"),
             Item(item_id="up", type="product", title="t", image=uploaded.name),
             Item(item_id="escape", type="product", title="t", image="media/../../secret.png"),
             Item(item_id="abs", type="product", title="t", image=str(secret)),
             Item(item_id="link", type="product", title="t", image="media/images/link.png")]
    engine = SimpleNamespace(store=_Store(items), media=store, cfg=None)
    return engine, secret


def test_catalogue_and_store_media_are_served(setup):
    engine, _ = setup
    for item in ("p1", "up"):
        data, ctype = media.item_media(engine, item, "image")
        assert ctype == "image/png" and data == _png()


@pytest.mark.parametrize("item", ["escape", "abs", "link"])
def test_nothing_outside_the_roots_can_be_read(setup, item):
    engine, _ = setup
    with pytest.raises(InputError, match="outside the media store|not a relative path"):
        media.item_media(engine, item, "image")


@pytest.mark.parametrize("ref", ["../secret.png", "images/../../secret.png", "/etc/passwd", "a\x00b", ""])
def test_inside_refuses_escapes(tmp_path, ref):
    with pytest.raises(InputError):
        media.inside(tmp_path, ref)


def test_bad_ids_kinds_and_missing_media_are_4xx(setup):
    engine, _ = setup
    with pytest.raises(InputError, match="invalid item id"):
        media.item_media(engine, "../etc", "image")
    with pytest.raises(InputError, match="unknown media kind"):
        media.item_media(engine, "p1", "../../x")
    with pytest.raises(NotFoundError, match="unknown item"):
        media.item_media(engine, "nope", "image")
    with pytest.raises(NotFoundError, match="has no audio"):
        media.item_media(engine, "p1", "audio")


def test_files_over_the_upload_limit_are_refused(setup):
    engine, _ = setup
    engine.media.limits = {"image": 10, "audio": 10, "video": 10}
    from mixrec.storage.errors import MediaTooLargeError

    with pytest.raises(MediaTooLargeError):
        media.item_media(engine, "p1", "image")
