"""Catalog and interaction records on disk (the interchange format between steps).

A catalog directory holds:
  items.jsonl          one ``Item`` per line; media paths are relative to the directory
  interactions.csv     user_id,item_id,event,weight,timestamp (implicit feedback)
  users.jsonl          optional ``User`` records (demo users carry their hidden tastes)
  media/...            image / audio / video files
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Item types are labels the catalogue chooses ("book", "podcast", ...): a model knows the types of
# the items it holds (fusion/item_catalog.py keeps them as a vocabulary of codes) and requests are
# checked against those, not against a fixed list. The pattern keeps labels fit for metric labels,
# feature names and the database column (String(16)).
ITEM_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,15}$"
ItemType = Annotated[str, StringConstraints(pattern=ITEM_TYPE_PATTERN)]
DEMO_ITEM_TYPES: tuple[str, ...] = ("product", "video", "audio")  # the demo catalogue's (and pre-label artifacts')
MAX_ITEM_TYPES = 100  # type codes are int8


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=200)
    type: ItemType
    title: str = Field(min_length=1)
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    category: str | None = None  # a coarse label (genre, product category) used in explanations
    image: str | None = None  # media paths, relative to the catalog directory
    audio: str | None = None
    video: str | None = None

    def text(self) -> str:
        """The text the text encoder sees."""
        parts = [self.title]
        if self.description:
            parts.append(self.description)
        if self.tags:
            parts.append("tags: " + ", ".join(self.tags))
        return ". ".join(parts)


class User(BaseModel):
    model_config = ConfigDict(extra="allow")
    user_id: str
    tastes: dict[str, float] = Field(default_factory=dict)  # demo only: hidden ground truth


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    event: str = "like"
    weight: float = 1.0
    timestamp: float = 0.0


def read_items(catalog_dir: str | Path) -> list[Item]:
    path = Path(catalog_dir) / "items.jsonl"
    with path.open() as f:
        return [Item.model_validate_json(line) for line in f if line.strip()]


def write_items(catalog_dir: str | Path, items: Iterable[Item]) -> None:
    path = Path(catalog_dir) / "items.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for it in items:
            f.write(it.model_dump_json(exclude_none=True) + "\n")


def read_users(catalog_dir: str | Path) -> list[User]:
    path = Path(catalog_dir) / "users.jsonl"
    if not path.exists():
        return []
    with path.open() as f:
        return [User.model_validate_json(line) for line in f if line.strip()]


def write_users(catalog_dir: str | Path, users: Iterable[User]) -> None:
    path = Path(catalog_dir) / "users.jsonl"
    with path.open("w") as f:
        for u in users:
            f.write(u.model_dump_json() + "\n")


INTERACTION_FIELDS = ("user_id", "item_id", "event", "weight", "timestamp")


def read_interactions(catalog_dir: str | Path) -> list[Interaction]:
    path = Path(catalog_dir) / "interactions.csv"
    with path.open(newline="") as f:
        return [Interaction(r["user_id"], r["item_id"], r.get("event") or "like",
                            float(r.get("weight") or 1.0), float(r.get("timestamp") or 0.0))
                for r in csv.DictReader(f)]


def write_interactions(catalog_dir: str | Path, rows: Iterable[Interaction]) -> None:
    path = Path(catalog_dir) / "interactions.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(INTERACTION_FIELDS)
        for r in rows:
            w.writerow([r.user_id, r.item_id, r.event, r.weight, r.timestamp])


def media_path(catalog_dir: str | Path, rel: str | None) -> Path | None:
    return None if rel is None else Path(catalog_dir) / rel


def write_json(path: str | Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True))
