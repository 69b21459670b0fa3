"""Recommender: the Bento's entry service. Apps call this; it calls the three encoders.

Every API validates its input and answers a 4xx naming the problem; media are
decoded and checked here (size, pixels, duration, format) before any encoder
sees them. Heavy work runs in worker threads so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from pydantic import Field

from mixrec.errors import InputError, shown_list
from services import encoder_check
from services.audio_encoder import AudioEncoder
from services.encoder_runtime import b64encode
from services.image_encoder import ImageEncoder
from services.schemas import ID_PATTERN, EventIn, ItemIn, ItemType
from services.settings import CONFIG
from services.text_encoder import TextEncoder

log = logging.getLogger("mixrec.recommender")
MixParam = Union[dict[str, Union[int, float]], Literal["interleave", "score"], None]
ItemId = Annotated[str, Field(pattern=ID_PATTERN)]
# Lists a caller sends are bounded, and each entry too: nothing in a request is unbounded.
ItemIds = Annotated[list[ItemId], Field(max_length=1000)]
Tags = Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=64)]


from services.http_guards import error_response as _error_response  # noqa: E402


def api_errors(fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            await encoder_check.guard(args[0])  # refused at start (served encoders do not match): a 503 naming both
            return await fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every failure becomes one answer in the one shape
            return _error_response(fn.__name__, e)
    return wrapper


def _options(k: int, types, tags, mix, exclude_item_ids, diversity: float, explain: bool):
    from services.engine import Options

    return Options(k=k, types=types, tags=tags, mix=mix, exclude_item_ids=exclude_item_ids or (),
                   diversity=diversity, explain=explain)


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is not valid base64") from None


def _read_upload(path: Path, limit: int, what: str) -> bytes:
    size = path.stat().st_size
    if size > limit:
        from mixrec.storage.errors import MediaTooLargeError

        raise MediaTooLargeError(size, limit, what)
    return path.read_bytes()


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _wav(wave) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave.samples, wave.sample_rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


# Backoff before each retry of an encoder call (~3 s in all): rides out adaptive-batching load
# shedding (the encoder answers 503 "process is overloaded") and a dropped keep-alive connection.
ENCODER_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


async def _call_encoder(method, payload, what: str):
    """``await method(payload)``, retried on overload and connection errors; else a 503 naming the encoder.

    BentoML 1.4's dependency client (``RemoteProxy``) is aiohttp; its other clients are httpx. A refused,
    reset or dropped connection is retried (encoding is idempotent) on a new connection, which the address
    in front of the encoder's replicas (a Kubernetes Service) sends to a replica again — another one when
    this one died; a timeout is not retried (the encoder is busy with it) and becomes a 503 at once.
    """
    from services.ops_metrics import encoder_call

    with encoder_call(what):  # latency and failures per modality on /metrics
        return await _call_encoder_retrying(method, payload, what)


async def _call_encoder_retrying(method, payload, what: str):
    import aiohttp
    import httpx
    from bentoml.exceptions import ServiceUnavailable

    from mixrec.errors import UnavailableError

    for delay in (*ENCODER_RETRY_DELAYS_S, None):
        try:
            return await method(payload)
        except (ServiceUnavailable, httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as e:
            if delay is None:
                raise UnavailableError(f"the {what} encoder is unavailable (overloaded or restarting), retry "
                                       f"later: {type(e).__name__}") from None
            await asyncio.sleep(delay)
        except (httpx.TimeoutException, asyncio.TimeoutError) as e:
            raise UnavailableError(f"the {what} encoder did not answer in time ({type(e).__name__}); retry "
                                   "later") from None
        except BentoMLException as e:
            if int(e.error_code) < 500:
                raise
            raise UnavailableError(f"the {what} encoder failed ({int(e.error_code)}); retry later") from None


def _checked_audio(data: bytes, limits) -> bytes:
    """``data`` once it decodes within the limits (rate, channels, length); the encoder decodes it again."""
    from encoders.media import decode_audio

    decode_audio(data, limits)
    return data


def _first_row(arr: Any, what: str) -> np.ndarray:
    v = np.array(arr, dtype=np.float32).reshape(-1, np.shape(arr)[-1])[0]
    if not np.all(np.isfinite(v)):
        raise InputError(f"{what} could not be encoded")
    return v


@bentoml.service(name="Recommender", workers=CONFIG.serving.workers, traffic={"timeout": CONFIG.serving.timeout_s})
class Recommender:
    # BentoML's own mechanism for a dependency running elsewhere: with ``serving.<slot>_encoder.url`` set
    # (MIXREC__SERVING__TEXT_ENCODER__URL=http://...), ``bentoml serve`` starts no local copy and calls that
    # address as JSON over HTTP; unset, the encoder runs beside the Recommender as before (README "Scale out").
    text_encoder = bentoml.depends(TextEncoder, url=CONFIG.serving.text_encoder.url)
    image_encoder = bentoml.depends(ImageEncoder, url=CONFIG.serving.image_encoder.url)
    audio_encoder = bentoml.depends(AudioEncoder, url=CONFIG.serving.audio_encoder.url)

    def __init__(self) -> None:
        from services.engine import RecommenderEngine

        self.cfg = CONFIG
        self.limits = CONFIG.limits
        self.engine = RecommenderEngine.open(CONFIG)
        self.encoder_check = encoder_check.for_service(self)
        self.started = time.time()
        from services import operate

        operate.bind(self.engine)  # metrics and the media endpoint read this worker's engine

    async def __is_ready__(self) -> bool:
        # ready only once the served encoders' fingerprints match the trained artifacts' (services/encoder_check.py)
        return self.engine is not None and await encoder_check.ready(self)

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        # Stops the sync thread and checkpoints; without it the worker lingers after SIGTERM.
        self.engine.close()

    # ------------------------------------------------------------------ encoding raw input
    async def _encode_text(self, text: str) -> np.ndarray:
        from encoders.media import check_text

        text = check_text(text, self.limits)
        return _first_row(await _call_encoder(self.text_encoder.to_async.encode, [text], "text"), "text")

    async def _encode_files(self, modality: str, files: list[bytes], prepare) -> np.ndarray:
        """One encoder call for all files of one modality, each prepared here first: decoded within the
        budgets (images are downscaled and sent as small PNGs — the same vectors, a bounded input)."""
        ready = [await asyncio.to_thread(prepare, data, self.limits) for data in files]
        encoder = self.image_encoder if modality == "image" else self.audio_encoder
        vecs = np.array(await _call_encoder(encoder.to_async.encode, [b64encode(b) for b in ready], modality),
                        np.float32).reshape(len(files), -1)
        if not np.all(np.isfinite(vecs)):
            raise InputError(f"an {modality} input could not be encoded")
        return vecs

    async def _encode_images(self, images: list[bytes]) -> np.ndarray:
        from encoders.media import image_for_encoder

        return await self._encode_files("image", images, image_for_encoder)

    async def _encode_clips(self, clips: list[bytes]) -> np.ndarray:
        return await self._encode_files("audio", clips, _checked_audio)

    async def _encode_image(self, data: bytes) -> np.ndarray:
        return (await self._encode_images([data]))[0]

    async def _encode_audio(self, data: bytes) -> np.ndarray:
        return (await self._encode_clips([data]))[0]

    async def _encode_video(self, data: bytes) -> dict[str, np.ndarray]:
        """Keyframes through the image encoder (mean), the soundtrack through the audio encoder."""
        from encoders.base import l2_normalise
        from encoders.media import read_keyframes, read_video_audio

        v = self.cfg.video
        frames = await asyncio.to_thread(read_keyframes, data, v.keyframes, self.limits, v.max_seconds)
        out: dict[str, np.ndarray] = {}
        vecs = np.array(await _call_encoder(self.image_encoder.to_async.encode, [b64encode(_png(f)) for f in frames],
                                            "image"), np.float32)
        if not np.all(np.isfinite(vecs)):
            raise InputError("video keyframes could not be encoded")
        out["image"] = l2_normalise(vecs.mean(axis=0))
        wave = await asyncio.to_thread(read_video_audio, data, self.limits, v.max_seconds)
        if wave is not None:
            out["audio"] = await self._encode_audio(_wav(wave))
        return out

    async def _query_vectors(self, text: str, images: list[bytes], clips: list[bytes]) -> dict[str, np.ndarray]:
        from encoders.base import l2_normalise

        n = len(images) + len(clips)
        if n > self.cfg.serving.max_query_files:
            raise InputError(f"{n} media files in one query; the limit is {self.cfg.serving.max_query_files}")
        # One call per modality, the modalities concurrently (as BentoML's CLIP example fans out).
        jobs: dict[str, Any] = {}
        if text and text.strip():
            jobs["text"] = self._encode_text(text)
        if images:
            jobs["image"] = self._encode_images(images)
        if clips:
            jobs["audio"] = self._encode_clips(clips)
        done = await asyncio.gather(*jobs.values(), return_exceptions=True)  # let every call finish, then
        for result in done:  # report the first failure (an input error outranks a later encoder error)
            if isinstance(result, BaseException):
                raise result
        return {m: (v if m == "text" else l2_normalise(v.mean(axis=0))) for m, v in zip(jobs, done)}

    async def _item_vectors(self, it: ItemIn, image: bytes | None, audio: bytes | None,
                            video: bytes | None) -> dict[str, np.ndarray]:
        from mixrec.catalog import Item

        vecs: dict[str, np.ndarray] = {"text": await self._encode_text(Item(
            item_id=it.item_id, type=it.type, title=it.title, description=it.description, tags=it.tags).text())}
        if video is not None:
            vecs.update(await self._encode_video(video))
        if image is not None:
            vecs["image"] = await self._encode_image(image)
        if audio is not None:
            vecs["audio"] = await self._encode_audio(audio)
        return vecs

    async def _add(self, specs: list[tuple[ItemIn, bytes | None, bytes | None, bytes | None]]) -> dict:
        from mixrec.catalog import Item

        self.engine._check_many("items", len(specs))
        ids = [s[0].item_id for s in specs]
        if len(set(ids)) != len(ids):
            raise InputError(f"duplicate item ids in the request: {shown_list(sorted({i for i in ids if ids.count(i) > 1}))}")
        items, vectors = [], {}
        for i, (spec, image, audio, video) in enumerate(specs):
            try:
                vectors[spec.item_id] = await self._item_vectors(spec, image, audio, video)
            except InputError as e:  # InvalidMediaError included: name the item, keep the status
                e.args = (f"item {spec.item_id!r} (index {i}): {e}",)
                raise
            refs = {}
            for kind, data in (("image", image), ("audio", audio), ("video", video)):
                if data is not None:
                    refs[kind] = (await asyncio.to_thread(self.engine.media.save, data, kind)).name
            items.append(Item(item_id=spec.item_id, type=spec.type, title=spec.title, description=spec.description,
                              tags=spec.tags, category=spec.category, **refs))
        return await asyncio.to_thread(self.engine.add_items, items, vectors)

    # ------------------------------------------------------------------ recommend
    @bentoml.api
    @api_errors
    async def recommend(self, user_id: str = Field(pattern=ID_PATTERN), k: int = 10,
                        types: list[ItemType] | None = None, tags: Tags | None = None, mix: MixParam = None,
                        exclude_seen: bool = True, exclude_item_ids: ItemIds | None = None,
                        diversity: float = Field(0.0, ge=0.0, le=1.0), explain: bool = True,
                        cold: bool = False) -> dict:
        """Top-k items for a user, with per-type mix, filters, exclusion of seen items and diversity.

        The user's events since the last model update count at once (fold-in). A user with no events
        at all is a 404, or with ``cold: true`` the most popular items, answered with ``cold: true``."""
        opts = _options(k, types, tags, mix, exclude_item_ids, diversity, explain)
        return await asyncio.to_thread(self.engine.recommend, user_id, opts, exclude_seen, cold)

    @bentoml.api
    @api_errors
    async def recommend_by_query(self, text: str = "", image: list[Path] = [], audio: list[Path] = [],
                                 image_b64: list[str] = [], audio_b64: list[str] = [],
                                 liked_item_ids: ItemIds = [], k: int = 10, types: list[ItemType] | None = None,
                                 tags: Tags | None = None, mix: MixParam = None,
                                 exclude_item_ids: ItemIds | None = None,
                                 diversity: float = Field(0.0, ge=0.0, le=1.0), explain: bool = True) -> dict:
        """For a user with no history: text and/or images and/or audio clips (files or base64) and/or liked items."""
        lim = self.limits
        images = [_read_upload(p, lim.max_image_bytes, "image") for p in image]
        images += [_b64(s, f"image_b64[{i}]") for i, s in enumerate(image_b64)]
        clips = [_read_upload(p, lim.max_audio_bytes, "audio") for p in audio]
        clips += [_b64(s, f"audio_b64[{i}]") for i, s in enumerate(audio_b64)]
        vectors = await self._query_vectors(text, images, clips)
        opts = _options(k, types, tags, mix, exclude_item_ids, diversity, explain)
        described = {"text": bool(text.strip()), "images": len(images), "audio_clips": len(clips),
                     "liked_items": len(liked_item_ids)}
        return await asyncio.to_thread(self.engine.recommend_by_query, vectors, liked_item_ids, opts, described)

    @bentoml.api
    @api_errors
    async def similar_items(self, item_id: str = Field(pattern=ID_PATTERN), k: int = 10,
                            types: list[ItemType] | None = None) -> dict:
        """Neighbours of an item; ``types`` picks the kinds returned (a song for a video, a product for a song)."""
        return await asyncio.to_thread(self.engine.similar_items, item_id, k, types)

    @bentoml.api
    @api_errors
    async def user_interests(self, user_id: str = Field(pattern=ID_PATTERN), top: int = Field(10, ge=1, le=100)) -> dict:
        """The user's interest distribution over readable interest clusters."""
        return await asyncio.to_thread(self.engine.user_interests, user_id, top)

    # ------------------------------------------------------------------ catalog writes
    @bentoml.api
    @api_errors
    async def add_items(self, items: list[ItemIn]) -> dict:
        """Add items (media as base64 fields); they are encoded, stored and recommendable at once."""
        lim = self.limits
        specs = []
        for i, it in enumerate(items):
            def dec(field: str, limit: int):
                raw = getattr(it, field)
                if raw is None:
                    return None
                if len(raw) * 3 // 4 > limit:
                    from mixrec.storage.errors import MediaTooLargeError

                    raise MediaTooLargeError(len(raw) * 3 // 4, limit, field.removesuffix("_b64"))
                return _b64(raw, f"items[{i}].{field}")
            specs.append((it, dec("image_b64", lim.max_image_bytes), dec("audio_b64", lim.max_audio_bytes),
                          dec("video_b64", lim.max_video_bytes)))
        return await self._add(specs)

    @bentoml.api
    @api_errors
    async def add_item(self, item_id: str = Field(pattern=ID_PATTERN), type: ItemType = "product",
                       title: str = Field(min_length=1, max_length=500), description: str = "",
                       tags: Tags = [], category: str | None = Field(None, max_length=200),
                       image: list[Path] = [], audio: list[Path] = [], video: list[Path] = []) -> dict:
        """Add one item with media as multipart files (curl -F image=@photo.jpg)."""
        lim = self.limits
        for name, files in (("image", image), ("audio", audio), ("video", video)):
            if len(files) > 1:
                raise InputError(f"give at most one {name} file per item, got {len(files)}")
        spec = ItemIn(item_id=item_id, type=type, title=title, description=description, tags=tags, category=category)
        return await self._add([(spec,
                                 _read_upload(image[0], lim.max_image_bytes, "image") if image else None,
                                 _read_upload(audio[0], lim.max_audio_bytes, "audio") if audio else None,
                                 _read_upload(video[0], lim.max_video_bytes, "video") if video else None)])

    @bentoml.api
    @api_errors
    async def delete_items(self, item_ids: list[ItemId]) -> dict:
        """Remove items from the catalog and from every later recommendation."""
        return await asyncio.to_thread(self.engine.delete_items, item_ids)

    # ------------------------------------------------------------------ feedback and users
    @bentoml.api
    @api_errors
    async def feedback(self, events: list[EventIn]) -> dict:
        """Record interactions; answered only once they are durable in the database."""
        from mixrec.catalog import Interaction

        now = time.time()
        batch = [Interaction(e.user_id, e.item_id, e.event, e.weight, e.timestamp if e.timestamp is not None else now)
                 for e in events]
        return await asyncio.to_thread(self.engine.feedback, batch)

    @bentoml.api
    @api_errors
    async def update_model(self, wait: bool = True) -> dict:
        """Apply the feedback received so far to the model now (fit_partial)."""
        return await asyncio.to_thread(self.engine.update_model, wait)

    @bentoml.api
    @api_errors
    async def forget_user(self, user_id: str = Field(pattern=ID_PATTERN)) -> dict:
        """Delete a user's interactions and what the model learned about them."""
        return await asyncio.to_thread(self.engine.forget_user, user_id)

    @bentoml.api
    @api_errors
    async def info(self) -> dict:
        """Encoders in use (with trained flags), catalog and model statistics."""
        encoders = {m: await _call_encoder(lambda _, enc=enc: enc.to_async.describe(), None, m) for m, enc in
                    (("text", self.text_encoder), ("image", self.image_encoder), ("audio", self.audio_encoder))}
        stats = await asyncio.to_thread(self.engine.info)
        from services.operate import info_counts

        stats["counts"] = info_counts(stats)  # database vs model counts, named so they cannot read as one
        untrained = [m for m, d in encoders.items() if not d.get("trained", True)]
        return {"profile": self.cfg.profile, "encoders": encoders, "untrained_encoders": untrained,
                "notice": (f"{', '.join(untrained)} encoder(s) run with UNTRAINED weights: their content signal "
                           "is weak; configure pretrained weights for production") if untrained else None,
                "uptime_s": round(time.time() - self.started, 1), "worker_pid": os.getpid(), **stats}


# Error shape, CORS (when configured), API key, body cap, origin guard; metrics labels, log filter, multipart
# hardening (services/http_guards.py says why in that order).
from services.http_guards import install_http_guards  # noqa: E402

install_http_guards(Recommender, CONFIG)
# The demo page (/ui, / redirects there, Swagger UI at /docs), /media, mixrec's metrics, request logs.
from services import operate  # noqa: E402

operate.install(Recommender, CONFIG)
