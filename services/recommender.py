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
import logging
import os
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException

from mixrec.errors import InputError, shown_list
from services import encoder_check
from services.audio_encoder import AudioEncoder
from services.encoder_runtime import b64encode
from services.image_encoder import ImageEncoder
from services.schemas import (AddItemRequest, AddItemsRequest, AddItemsResponse, DeleteItemsRequest,
                              DeleteItemsResponse, FeedbackRequest, FeedbackResponse, ForgetUserRequest,
                              ForgetUserResponse, InfoResponse, ItemIn, QueryRequest, QueryResponse, RecommendRequest,
                              RecommendResponse, SimilarItemsRequest, SimilarItemsResponse, UpdateModelRequest,
                              UpdateModelResponse, UserInterestsRequest, UserInterestsResponse)
from services.settings import CONFIG
from services.text_encoder import TextEncoder

log = logging.getLogger("mixrec.recommender")


from services.http_guards import error_response as _error_response  # noqa: E402


def endpoint(request_model):
    """``@bentoml.api`` with ``request_model`` (services/schemas.py) as the input spec: the body (JSON or
    form) is the model's fields, as the flat signatures were, and the handler receives the model.
    Every failure becomes the one error answer (``_error_response``)."""
    def wrap(fn):
        @functools.wraps(fn)
        async def handler(self, **fields):
            try:
                await encoder_check.guard(self)  # refused at start (served encoders do not match): a 503 naming both
                if request_model is None:
                    return await fn(self)
                # BentoML validated the fields against request_model already: no second validation
                return await fn(self, request_model.model_construct(**fields))
            except Exception as e:  # noqa: BLE001 - every failure becomes one answer in the one shape
                return _error_response(fn.__name__, e)
        return bentoml.api(input_spec=request_model)(handler) if request_model else bentoml.api(handler)
    return wrap


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


def _mean_vector(rows: np.ndarray, what: str) -> np.ndarray:
    """A query's vector for several images (clips): the mean of their rows, L2-normalised."""
    from encoders.base import l2_normalise

    if not np.all(np.isfinite(rows)):
        raise InputError(f"an {what} input could not be encoded")
    return l2_normalise(rows.mean(axis=0))


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
        # and the ANN indexes the catalogue needs are loaded (services/operate.py)
        from services import operate

        return operate.ready(self.engine) and await encoder_check.ready(self)

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        # Stops the sync thread and checkpoints; without it the worker lingers after SIGTERM.
        self.engine.close()

    # ------------------------------------------------------------------ encoding raw input
    @functools.cached_property
    def encoders(self):
        from services.encoder_client import EncoderClient

        return EncoderClient({"text": self.text_encoder, "image": self.image_encoder, "audio": self.audio_encoder})

    async def _query_vectors(self, text: str, images: list[bytes], clips: list[bytes]) -> dict[str, np.ndarray]:
        """One encoder call per modality (the text, all images, all clips), the modalities concurrently."""
        from encoders.media import check_text, image_for_encoder
        from services.item_vectors import checked_audio

        n = len(images) + len(clips)
        if n > self.cfg.serving.max_query_files:
            raise InputError(f"{n} media files in one query; the limit is {self.cfg.serving.max_query_files}")
        lim = self.limits

        def prepare() -> dict[str, list[str]]:  # decoded within the budgets before any encoder runs
            return {"text": [check_text(text, lim)] if text and text.strip() else [],
                    "image": [b64encode(image_for_encoder(d, lim)) for d in images],
                    "audio": [b64encode(checked_audio(d, lim)) for d in clips]}

        encoded = await self.encoders.encode_all(await asyncio.to_thread(prepare))
        return {m: (_first_row(v, m) if m == "text" else _mean_vector(v, m)) for m, v in encoded.items()}

    async def _items_vectors(self, specs) -> list[dict[str, np.ndarray]]:
        """The online recipe (services/item_vectors.py): every item prepared, then one call per modality."""
        from mixrec.catalog import Item
        from services.item_vectors import assemble, payloads, prepare_item

        def prepare_all():
            prepared = []
            for i, (it, image, audio, video) in enumerate(specs):
                text = Item(item_id=it.item_id, type=it.type, title=it.title, description=it.description,
                            tags=it.tags).text()
                try:
                    prepared.append(prepare_item(text, image, audio, video, self.limits, self.cfg.video))
                except InputError as e:  # InvalidMediaError included: name the item, keep the status
                    e.args = (f"item {it.item_id!r} (index {i}): {e}",)
                    raise
            return prepared

        prepared = await asyncio.to_thread(prepare_all)
        encoded = await self.encoders.encode_all(payloads(prepared))
        return assemble(prepared, encoded, [s[0].item_id for s in specs])

    async def _add(self, specs: list[tuple[ItemIn, bytes | None, bytes | None, bytes | None]]) -> dict:
        from mixrec.catalog import Item

        self.engine._check_many("items", len(specs))
        ids = [s[0].item_id for s in specs]
        if len(set(ids)) != len(ids):
            raise InputError(f"duplicate item ids in the request: {shown_list(sorted({i for i in ids if ids.count(i) > 1}))}")
        vectors = dict(zip(ids, await self._items_vectors(specs)))
        items = []
        for spec, image, audio, video in specs:
            refs = {}
            for kind, data in (("image", image), ("audio", audio), ("video", video)):
                if data is not None:
                    refs[kind] = (await asyncio.to_thread(self.engine.media.save, data, kind)).name
            items.append(Item(item_id=spec.item_id, type=spec.type, title=spec.title, description=spec.description,
                              tags=spec.tags, category=spec.category, **refs))
        return await asyncio.to_thread(self.engine.add_items, items, vectors)

    # ------------------------------------------------------------------ recommend
    @endpoint(RecommendRequest)
    async def recommend(self, req: RecommendRequest) -> RecommendResponse:
        """Top-k items for a user, with per-type mix, filters, exclusion of seen items and diversity.

        The user's events since the last model update count at once (fold-in). A user with no events
        at all is a 404, or with ``cold: true`` the most popular items, answered with ``cold: true``."""
        return RecommendResponse(**await asyncio.to_thread(self.engine.recommend, req.user_id, req,
                                                           req.exclude_seen, req.cold))

    @endpoint(QueryRequest)
    async def recommend_by_query(self, req: QueryRequest) -> QueryResponse:
        """For a user with no history: text and/or images and/or audio clips (files or base64) and/or liked items."""
        lim = self.limits
        images = [_read_upload(p, lim.max_image_bytes, "image") for p in req.image]
        images += [_b64(s, f"image_b64[{i}]") for i, s in enumerate(req.image_b64)]
        clips = [_read_upload(p, lim.max_audio_bytes, "audio") for p in req.audio]
        clips += [_b64(s, f"audio_b64[{i}]") for i, s in enumerate(req.audio_b64)]
        vectors = await self._query_vectors(req.text, images, clips)
        described = {"text": bool(req.text.strip()), "images": len(images), "audio_clips": len(clips),
                     "liked_items": len(req.liked_item_ids)}
        return QueryResponse(**await asyncio.to_thread(self.engine.recommend_by_query, vectors, req.liked_item_ids,
                                                       req, described))

    @endpoint(SimilarItemsRequest)
    async def similar_items(self, req: SimilarItemsRequest) -> SimilarItemsResponse:
        """Neighbours of an item; ``types`` picks the kinds returned (a song for a video, a product for a song)."""
        return SimilarItemsResponse(**await asyncio.to_thread(self.engine.similar_items, req.item_id, req.k,
                                                              req.types))

    @endpoint(UserInterestsRequest)
    async def user_interests(self, req: UserInterestsRequest) -> UserInterestsResponse:
        """The user's interest distribution over readable interest clusters."""
        return UserInterestsResponse(**await asyncio.to_thread(self.engine.user_interests, req.user_id, req.top))

    # ------------------------------------------------------------------ catalog writes
    @endpoint(AddItemsRequest)
    async def add_items(self, req: AddItemsRequest) -> AddItemsResponse:
        """Add items (media as base64 fields); they are encoded, stored and recommendable at once."""
        lim = self.limits
        specs = []
        for i, it in enumerate(req.items):
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
        return AddItemsResponse(**await self._add(specs))

    @endpoint(AddItemRequest)
    async def add_item(self, req: AddItemRequest) -> AddItemsResponse:
        """Add one item with media as multipart files (curl -F image=@photo.jpg)."""
        lim = self.limits
        for name in ("image", "audio", "video"):
            if len(getattr(req, name)) > 1:
                raise InputError(f"give at most one {name} file per item, got {len(getattr(req, name))}")
        spec = ItemIn(item_id=req.item_id, type=req.type, title=req.title, description=req.description,
                      tags=req.tags, category=req.category)
        return AddItemsResponse(**await self._add([(
            spec,
            _read_upload(req.image[0], lim.max_image_bytes, "image") if req.image else None,
            _read_upload(req.audio[0], lim.max_audio_bytes, "audio") if req.audio else None,
            _read_upload(req.video[0], lim.max_video_bytes, "video") if req.video else None)]))

    @endpoint(DeleteItemsRequest)
    async def delete_items(self, req: DeleteItemsRequest) -> DeleteItemsResponse:
        """Remove items from the catalog and from every later recommendation."""
        return DeleteItemsResponse(**await asyncio.to_thread(self.engine.delete_items, req.item_ids))

    # ------------------------------------------------------------------ feedback and users
    @endpoint(FeedbackRequest)
    async def feedback(self, req: FeedbackRequest) -> FeedbackResponse:
        """Record interactions; answered only once they are durable in the database."""
        from mixrec.catalog import Interaction

        now = time.time()
        batch = [Interaction(e.user_id, e.item_id, e.event, e.weight, e.timestamp if e.timestamp is not None else now)
                 for e in req.events]
        return FeedbackResponse(**await asyncio.to_thread(self.engine.feedback, batch))

    @endpoint(UpdateModelRequest)
    async def update_model(self, req: UpdateModelRequest) -> UpdateModelResponse:
        """Apply the feedback received so far to the model now (fit_partial)."""
        return UpdateModelResponse(**await asyncio.to_thread(self.engine.update_model, req.wait))

    @endpoint(ForgetUserRequest)
    async def forget_user(self, req: ForgetUserRequest) -> ForgetUserResponse:
        """Delete a user's interactions and what the model learned about them."""
        return ForgetUserResponse(**await asyncio.to_thread(self.engine.forget_user, req.user_id))

    @endpoint(None)
    async def info(self) -> InfoResponse:
        """Encoders in use (with trained flags), catalog and model statistics."""
        from services.encoder_client import call_encoder

        encoders = {m: await call_encoder(lambda _, enc=enc: enc.to_async.describe(), None, m) for m, enc in
                    (("text", self.text_encoder), ("image", self.image_encoder), ("audio", self.audio_encoder))}
        stats = await asyncio.to_thread(self.engine.info)
        from services.operate import info_counts

        stats["counts"] = info_counts(stats)  # database vs model counts, named so they cannot read as one
        untrained = [m for m, d in encoders.items() if not d.get("trained", True)]
        return InfoResponse(
            profile=self.cfg.profile, encoders=encoders, untrained_encoders=untrained,
            notice=(f"{', '.join(untrained)} encoder(s) run with UNTRAINED weights: their content signal is weak; "
                    "configure pretrained weights for production") if untrained else None,
            uptime_s=round(time.time() - self.started, 1), worker_pid=os.getpid(), **stats)


# Error shape, CORS (when configured), API key, body cap, origin guard; metrics labels, log filter, multipart
# hardening (services/http_guards.py says why in that order).
from services.http_guards import install_http_guards  # noqa: E402

install_http_guards(Recommender, CONFIG)
# /docs.json as a valid OpenAPI 3.1 document with every response typed (services/openapi_spec.py says why).
from services.openapi_spec import OpenAPIDocumentMiddleware  # noqa: E402

Recommender.add_asgi_middleware(OpenAPIDocumentMiddleware, service=Recommender)

# The demo page (/ui, / redirects there, Swagger UI at /docs), /media, mixrec's metrics, request logs.
from services import operate  # noqa: E402

operate.install(Recommender, CONFIG)
