"""``GET /media/{item_id}/{kind}``: an item's image, audio, video (or a video's poster frame).

The client names an item and a kind, never a path: the path comes from the item's own
reference in the catalogue, and is served only when it lies inside one of two roots:

* the media store (``storage.media_dir``): uploads, named by content (``mixrec.storage.media``
  checks the exact name shape);
* the catalogue's own ``media/`` folder (``MIXREC_CATALOG_DIR``, default the working directory)
  for the items a trained catalogue brought with it, resolved with symlinks followed and
  refused unless the result is still inside that folder.

Files larger than the upload limit for their kind are refused too (the same limits as uploads);
the API key applies as to every other endpoint (services/auth.py leaves only the page open).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from mixrec.errors import InputError, NotFoundError, shown
from mixrec.storage.media import sniff
from services.schemas import ID_PATTERN

ITEM_ID = re.compile(ID_PATTERN)

MEDIA_KINDS = ("image", "audio", "video", "poster")
CATALOG_ENV = "MIXREC_CATALOG_DIR"
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
                 "bmp": "image/bmp", "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg",
                 "mp3": "audio/mpeg", "aac": "audio/aac", "m4a": "audio/mp4", "mp4": "video/mp4",
                 "mov": "video/quicktime", "webm": "video/webm", "mkv": "video/x-matroska", "avi": "video/x-msvideo"}


def catalog_media_root() -> Path:
    return (Path(os.environ.get(CATALOG_ENV) or os.getcwd()) / "media").resolve()


def inside(root: Path, ref: str) -> Path:
    """``root / ref`` with symlinks resolved, or an ``InputError`` when it would leave ``root``."""
    if not ref or "\x00" in ref or Path(ref).is_absolute():
        raise InputError(f"media reference {shown(ref)} is not a relative path")
    path = (root / ref).resolve()
    if not path.is_relative_to(root):
        raise InputError(f"media reference {shown(ref)} points outside the media store")
    return path


def resolve(store, ref: str) -> Path:
    """The file behind an item's media reference: a media-store name or a catalogue ``media/...`` path."""
    try:
        return store.path(ref)  # the exact content-addressed shape, or MediaError
    except FileNotFoundError:
        raise NotFoundError(f"media {shown(ref)} is missing from the media store") from None
    except Exception:  # not a store name: a catalogue path
        pass
    root = catalog_media_root()
    path = inside(root, ref.removeprefix("media/"))
    if not path.is_file():
        raise NotFoundError(f"media {shown(ref)} is missing")
    return path


def item_media(engine, item_id: str, kind: str) -> tuple[bytes, str]:
    """(bytes, content type) of ``item_id``'s ``kind``; "poster" is a video's first keyframe as PNG."""
    if kind not in MEDIA_KINDS:
        raise InputError(f"unknown media kind {shown(kind)}; expected one of {', '.join(MEDIA_KINDS)}")
    if not ITEM_ID.match(item_id):
        raise InputError(f"invalid item id {shown(item_id)}")
    items = engine.store.get_items([item_id])
    if not items:
        raise NotFoundError(f"unknown item {shown(item_id)}")
    ref = getattr(items[0], "video" if kind == "poster" else kind)
    if not ref:
        raise NotFoundError(f"item {shown(item_id)} has no {'video' if kind == 'poster' else kind}")
    path = resolve(engine.media, ref)
    want = "video" if kind == "poster" else kind
    limit = engine.media.limits.get(want, 0)
    size = path.stat().st_size
    if size > limit:
        from mixrec.storage.errors import MediaTooLargeError

        raise MediaTooLargeError(size, limit, want)
    data = path.read_bytes()
    found = sniff(data[:64])
    if found is None or found[0] != want:
        from mixrec.storage.errors import UnsupportedMediaError

        raise UnsupportedMediaError(f"stored {want} of {shown(item_id)} is not a recognised {want} file")
    if kind == "poster":
        return _poster(data, engine), "image/png"
    return data, CONTENT_TYPES.get(found[1], "application/octet-stream")


def _poster(video: bytes, engine) -> bytes:
    from encoders.media import read_keyframes

    cfg = engine.cfg
    frames = read_keyframes(video, 1, cfg.limits, cfg.video.max_seconds)
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG")
    return buf.getvalue()


def media_app(get_engine):
    """The Starlette app mounted at ``/media``; ``get_engine()`` is this worker's engine."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def serve(request):
        from services.http_guards import error_response

        try:
            engine = get_engine()
            if engine is None:
                from mixrec.errors import UnavailableError

                raise UnavailableError("the service is starting")
            data, ctype = await asyncio.to_thread(item_media, engine, request.path_params["item_id"],
                                                  request.path_params["kind"])
        except Exception as e:  # noqa: BLE001 - the one error shape, as every API answers
            return error_response("media", e)
        return Response(data, media_type=ctype, headers={"Cache-Control": "private, max-age=300",
                                                         "X-Content-Type-Options": "nosniff"})

    return Starlette(routes=[Route("/{item_id}/{kind}", serve, methods=["GET"])])
