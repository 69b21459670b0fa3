"""Request and response models of the Recommender API (pydantic; shown in /docs.json)."""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

ItemType = Literal["product", "video", "audio"]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,199}$"  # ids appear in URLs, logs and SQL: keep them plain
EVENT_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
Tag = Annotated[str, Field(min_length=1, max_length=200)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankingOptions(_In):
    """Options shared by every recommend call."""

    k: int = Field(10, description="how many items to return (1..serving.max_k)")
    types: list[ItemType] | None = Field(None, description="only these item types")
    tags: list[str] | None = Field(None, description="only items carrying at least one of these tags")
    mix: Union[dict[str, float], Literal["interleave"], None] = Field(
        None, description='per-type quotas {"product": 5, "audio": 5}, proportions {"video": 0.5, "audio": 0.5} '
        'or "interleave" (round-robin over types by score)')
    exclude_item_ids: list[str] = Field(default_factory=list, max_length=1000)
    diversity: float = Field(0.0, ge=0.0, le=1.0, description="0 = pure score, 1 = maximal diversity (MMR)")
    explain: bool = True


class RecommendRequest(RankingOptions):
    user_id: str = Field(pattern=ID_PATTERN)
    exclude_seen: bool = True
    cold: bool = Field(False, description="for a user with no events: popular items flagged cold: true instead of a 404")


class EventIn(_In):
    user_id: str = Field(pattern=ID_PATTERN)
    item_id: str = Field(pattern=ID_PATTERN)
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


class ItemIn(_In):
    """An item to add. Media travel as base64 in JSON (``add_items``) or as files (``add_item``)."""

    item_id: str = Field(pattern=ID_PATTERN)
    type: ItemType
    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=20_000)
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    category: str | None = Field(None, max_length=200)
    image_b64: str | None = None
    audio_b64: str | None = None
    video_b64: str | None = None


class RecommendedItem(BaseModel):
    item_id: str
    type: str
    title: str
    score: float
    explanation: dict | None = None


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    user_id: str | None = None
    query: dict | None = None
