"""The Recommender's API contract: every endpoint's request and response model (pydantic; shown in /docs.json).

Each endpoint takes one request model below as its input spec (the JSON body or form is its
fields, as before) and returns one response model. ``RankingOptions`` is the one definition of
the ranking options: both recommend endpoints inherit it and the engine ranks with it as is
(``services.engine.Options`` is this class). Item types come from ``mixrec.catalog.ItemType``
(labels the catalogue chooses; requests are checked against the model's own).
Errors are not modelled here: every error answer is ``ErrorResponse`` (mixrec/errors.py writes it).

Response models allow fields beyond the ones declared (``extra="allow"``), so the engine can add
a statistic without breaking older clients; the declared fields are always present.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mixrec.catalog import ItemType

__all__ = ["ItemType", "ID_PATTERN", "RankingOptions", "RecommendRequest", "QueryRequest", "SimilarItemsRequest",
           "UserInterestsRequest", "ItemIn", "AddItemsRequest", "AddItemRequest", "DeleteItemsRequest", "EventIn",
           "FeedbackRequest", "UpdateModelRequest", "ForgetUserRequest", "RecommendResponse", "QueryResponse",
           "SimilarItemsResponse", "UserInterestsResponse", "AddItemsResponse", "DeleteItemsResponse",
           "FeedbackResponse", "UpdateModelResponse", "ForgetUserResponse", "InfoResponse", "ErrorResponse"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,199}$"  # ids appear in URLs, logs and SQL: keep them plain
EVENT_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
ItemId = Annotated[str, Field(pattern=ID_PATTERN)]
# Lists a caller sends are bounded, and each entry too: nothing in a request is unbounded.
ItemIds = Annotated[list[ItemId], Field(max_length=1000)]
Tag = Annotated[str, Field(min_length=1, max_length=200)]
Tags = Annotated[list[Tag], Field(max_length=64)]
Mix = Union[dict[str, Union[int, float]], Literal["interleave", "score"], None]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------- requests
class RankingOptions(_In):
    """Options shared by every recommend call (and the engine's ``Options``)."""

    k: int = Field(10, description="how many items to return (1..serving.max_k)")
    types: list[ItemType] | None = Field(None, description="only these item types")
    tags: Tags | None = Field(None, description="only items carrying at least one of these tags")
    mix: Mix = Field(None, description='per-type quotas {"product": 5, "audio": 5}, proportions '
                     '{"video": 0.5, "audio": 0.5}, "interleave" (round-robin over types by score) or "score"')
    exclude_item_ids: ItemIds = Field(default_factory=list, description="never return these items")
    diversity: float = Field(0.0, ge=0.0, le=1.0, description="0 = pure score, 1 = maximal diversity (MMR)")
    explain: bool = Field(True, description="add an explanation to each item")

    @field_validator("exclude_item_ids", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:  # clients that send null meant "none"
        return [] if v is None else v


class RecommendRequest(RankingOptions):
    user_id: ItemId
    exclude_seen: bool = True
    cold: bool = Field(False, description="for a user with no events: popular items flagged cold: true instead of a 404")


class QueryRequest(RankingOptions):
    """For a user with no history: text and/or images and/or audio clips (files or base64) and/or liked items."""

    text: str = ""
    image: list[Path] = Field(default_factory=list, description="image files (multipart)")
    audio: list[Path] = Field(default_factory=list, description="audio files (multipart)")
    image_b64: list[str] = Field(default_factory=list, description="images as base64 (JSON)")
    audio_b64: list[str] = Field(default_factory=list, description="audio clips as base64 (JSON)")
    liked_item_ids: ItemIds = Field(default_factory=list)


class SimilarItemsRequest(_In):
    item_id: ItemId
    k: int = 10
    types: list[ItemType] | None = Field(None, description="the kinds returned (a song for a video, a product for a song)")


class UserInterestsRequest(_In):
    user_id: ItemId
    top: int = Field(10, ge=1, le=100)


class _ItemFields(_In):
    item_id: ItemId
    type: ItemType
    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=20_000)
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    category: str | None = Field(None, max_length=200)


class ItemIn(_ItemFields):
    """An item to add. Media travel as base64 in JSON (``add_items``) or as files (``add_item``)."""

    image_b64: str | None = None
    audio_b64: str | None = None
    video_b64: str | None = None


class AddItemsRequest(_In):
    items: list[ItemIn]


class AddItemRequest(_ItemFields):
    """One item with media as multipart files (curl -F image=@photo.jpg); at most one file of each kind."""

    image: list[Path] = Field(default_factory=list)
    audio: list[Path] = Field(default_factory=list)
    video: list[Path] = Field(default_factory=list)


class DeleteItemsRequest(_In):
    item_ids: list[ItemId]


class EventIn(_In):
    user_id: ItemId
    item_id: ItemId
    event: str = Field("like", pattern=EVENT_PATTERN,
                       description="an event type the config's `events` defines (defaults: view, click, play, "
                                   "like, purchase — positive; dislike — negative)")
    weight: float = Field(1.0, ge=0.0, le=100.0)
    timestamp: float | None = Field(None, ge=0, description="unix seconds; server time when omitted")

    @field_validator("weight", "timestamp")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class FeedbackRequest(_In):
    events: list[EventIn]


class UpdateModelRequest(_In):
    wait: bool = True


class ForgetUserRequest(_In):
    user_id: ItemId


# ---------------------------------------------------------------------------------------------- responses
class RecommendedItem(_Out):
    item_id: str
    type: ItemType
    title: str
    score: float
    explanation: dict[str, Any] | None = Field(None, description="why this item (when explain is true)")


class Interest(_Out):
    cluster: int
    label: str
    probability: float


class RecommendResponse(_Out):
    user_id: str
    items: list[RecommendedItem]
    fresh_events: int = Field(description="the user's events since the last model update, counted at once")
    cold: bool = Field(description="true: the user has no events, these are popular items")


class QueryDescription(_Out):
    text: bool
    images: int
    audio_clips: int
    liked_items: int
    interests: list[Interest]


class QueryResponse(_Out):
    items: list[RecommendedItem]
    query: QueryDescription


class SimilarItemsResponse(_Out):
    item_id: str
    items: list[RecommendedItem]


class UserInterestsResponse(_Out):
    user_id: str
    interests: list[Interest]


class AddItemsResponse(_Out):
    added: list[str]
    catalog_size: int
    applied: bool = Field(description="false: committed, applied to the model by the next sync")


class DeleteItemsResponse(_Out):
    deleted: list[str]
    not_found: list[str]
    catalog_size: int
    applied: bool


class FeedbackResponse(_Out):
    accepted: int
    event_ids: list[int]
    pending_for_update: int
    applied: bool


class UpdateModelResponse(_Out):
    started: bool
    running: bool
    updates_done: int
    last_update_seconds: float | None = None


class ForgetUserResponse(_Out):
    user_id: str
    removed_interactions: int
    model_forgot: bool
    applied: bool


class InfoResponse(_Out):
    profile: str
    encoders: dict[str, dict[str, Any]]
    untrained_encoders: list[str]
    notice: str | None = None
    uptime_s: float
    worker_pid: int
    catalog: dict[str, Any]
    model: dict[str, Any]
    watermarks: dict[str, Any]
    sync_failures: int


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str


class ErrorResponse(BaseModel):
    """Every error answer: ``{"error": {"status", "code", "message"}}``."""

    error: ErrorDetail
