"""RecommenderEngine: everything the Recommender service does, minus HTTP and encoders.

It owns the trained HybridModel (an in-memory cache), the durable CatalogStore
(the source of truth), the media directory and the ranking step. The BentoML
service encodes raw input through the encoder services and calls in here with
native-space vectors, so the whole API can be tested in-process.

Consistency model:
  * a write (items, feedback, forget) is committed to the database first and
    applied to the model second, so an acknowledged write is never lost;
  * the model checkpoints itself to ``serving.state_dir`` with the ids of the
    last database rows it has applied (watermarks); on start it loads the
    checkpoint (or the trained artifacts) and replays what came after;
  * a background thread polls the database every ``serving.sync_interval_s``,
    which is how replicas sharing one PostgreSQL see each other's writes, and
    runs ``fit_partial`` when ``serving.update_every`` new events arrived.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fusion.hybrid import HybridModel, UnknownItemError, UnknownUserError
from fusion.query import Query
from mixrec.catalog import Interaction, Item
from mixrec.config import MODALITIES, MixrecConfig
from mixrec.embeddings import ItemEmbeddings
from mixrec.ranking import ItemTable, rank
from mixrec.storage.media import MediaStore
from mixrec.storage.store import CatalogStore
from services.persistence import ServiceTables

log = logging.getLogger("mixrec.engine")
CHECKPOINT_VERSION = 1


class BadRequest(ValueError):
    """The caller's request is invalid (400)."""


class NotFound(KeyError):
    """An id the caller named does not exist (404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


@dataclass
class Options:
    k: int = 10
    types: list[str] | None = None
    tags: list[str] | None = None
    mix: Any = None
    exclude_item_ids: Sequence[str] = ()
    diversity: float = 0.0
    explain: bool = True


def load_trained_model(artifacts: str) -> HybridModel:
    if artifacts.startswith("bentoml:"):
        return HybridModel.load_from_model_store(artifacts[len("bentoml:"):])
    return HybridModel.load(artifacts)


class RecommenderEngine:
    def __init__(self, cfg: MixrecConfig, model: HybridModel, store: CatalogStore, media: MediaStore,
                 watermarks: dict[str, int] | None = None) -> None:
        self.cfg = cfg
        self.model = model
        self.store = store
        self.media = media
        self.tables = ServiceTables(store._engine)
        marks = watermarks or {}
        self.event_mark = int(marks.get("events", 0))
        self.change_mark = int(marks.get("changes", 0))
        self.forget_mark = int(marks.get("forgotten", 0))
        self.pending_events = 0
        self.updates_done = 0
        self.last_update_seconds: float | None = None
        self._sync_lock = threading.Lock()
        self._update_lock = threading.Lock()
        self._update_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._table: tuple[tuple[str, ...], ItemTable] | None = None

    # ================================================================ lifecycle
    @classmethod
    def open(cls, cfg: MixrecConfig, start_background: bool = True) -> "RecommenderEngine":
        state = Path(cfg.serving.state_dir)
        ckpt = state / "model"
        marks: dict[str, int] = {}
        if (state / "watermarks.json").exists() and ckpt.exists():
            model = HybridModel.load(ckpt)
            marks = json.loads((state / "watermarks.json").read_text())
            log.info("loaded checkpoint %s (watermarks %s)", ckpt, marks)
        else:
            model = load_trained_model(cfg.serving.artifacts)
            log.info("loaded trained artifacts %s", cfg.serving.artifacts)
        store = CatalogStore(cfg.storage.url)
        limits = cfg.limits
        media = MediaStore(cfg.storage.media_dir, {"image": limits.max_image_bytes, "audio": limits.max_audio_bytes,
                                                   "video": limits.max_video_bytes})
        engine = cls(cfg, model, store, media, marks)
        engine.bootstrap_catalog()
        engine.sync()
        if start_background:
            engine.start_background()
        return engine

    def bootstrap_catalog(self) -> None:
        """First start on an empty database: the trained catalog becomes the stored catalog."""
        if self.store.count_items() == 0 and self.model.items:
            self.store.add_items(self.model.items)
            # Those adds are already in the model: start the change log after them.
            changes = self.store.catalog_changes(since_id=self.change_mark)
            if changes:
                self.change_mark = max(c.id for c in changes)

    def start_background(self) -> None:
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, name="mixrec-sync", daemon=True)
            self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._update_thread is not None:
            self._update_thread.join(timeout=60)
        self.checkpoint()
        self.store.close()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.cfg.serving.sync_interval_s):
            try:
                self.sync()
            except Exception:  # keep serving; the next round retries
                log.exception("background sync failed")

    # ================================================================ database -> model
    def sync(self) -> dict[str, int]:
        """Apply database rows this model has not seen yet (other replicas' writes, restarts)."""
        applied = {"items_added": 0, "items_removed": 0, "events": 0, "forgotten": 0}
        with self._sync_lock:
            changes = self.store.catalog_changes(since_id=self.change_mark)
            if changes:
                known = set(self.model.item_index())
                adds = [c.item_id for c in changes if c.op == "add"]
                deletes = {c.item_id for c in changes if c.op == "delete"}
                new_ids = [i for i in dict.fromkeys(adds) if i not in known and i not in deletes]
                if new_ids:
                    items = self.store.get_items(new_ids)
                    vecs = self.tables.get_vectors([it.item_id for it in items])
                    items = [it for it in items if it.item_id in vecs]
                    if items:
                        self.model.add_items(items, self._embeddings(items, vecs))
                        applied["items_added"] = len(items)
                gone = [i for i in deletes if i in set(self.model.item_index())]
                if gone:
                    self.model.remove_items(gone)
                    applied["items_removed"] = len(gone)
                self.change_mark = max(c.id for c in changes)
            for fid, user in self.tables.forgotten_since(self.forget_mark):
                if user in set(self.model.known_users()):
                    self.model.forget_user(user)
                    applied["forgotten"] += 1
                self.forget_mark = fid
            events = self.store.interactions(since_id=self.event_mark)
            if events:
                known = set(self.model.item_index())
                batch = [e.to_interaction() for e in events if e.item_id in known and e.weight > 0]
                if batch:
                    self.model.add_interactions(batch)
                applied["events"] = len(batch)
                self.pending_events += len(batch)
                self.event_mark = max(e.id for e in events)
        if self.cfg.serving.update_every and self.pending_events >= self.cfg.serving.update_every:
            self.update_model(wait=False)
        return applied

    def _embeddings(self, items: Sequence[Item], vecs: dict[str, dict[str, np.ndarray]]) -> ItemEmbeddings:
        dims = self.model.space.dims if hasattr(self.model.space, "dims") else {}
        vectors, masks = {}, {}
        for m in MODALITIES:
            dim = dims.get(m) or next((v[m].size for v in vecs.values() if m in v), None)
            if dim is None:
                continue
            arr = np.zeros((len(items), dim), np.float32)
            mask = np.zeros(len(items), bool)
            for i, it in enumerate(items):
                v = vecs.get(it.item_id, {}).get(m)
                if v is not None:
                    arr[i], mask[i] = v, True
            vectors[m], masks[m] = arr, mask
        return ItemEmbeddings([it.item_id for it in items], vectors, masks)

    # ================================================================ model updates
    def update_model(self, wait: bool = True, epochs: int | None = None) -> dict:
        """Run ``fit_partial`` on what arrived since the last update, in a background thread.

        Requests keep being served from the previous model until the new one is published.
        """
        with self._update_lock:
            running = self._update_thread is not None and self._update_thread.is_alive()
            if not running:
                self._update_thread = threading.Thread(target=self._run_update, args=(epochs,),
                                                       name="mixrec-update", daemon=True)
                self._update_thread.start()
            thread = self._update_thread
        if wait:
            thread.join()
        return {"started": not running, "running": thread.is_alive(), "updates_done": self.updates_done,
                "last_update_seconds": self.last_update_seconds}

    def _run_update(self, epochs: int | None) -> None:
        t0 = time.perf_counter()
        try:
            pending = self.pending_events
            self.model.fit_partial(epochs=epochs or self.cfg.serving.update_epochs)
            self.pending_events = max(0, self.pending_events - pending)
            self.updates_done += 1
            self.last_update_seconds = round(time.perf_counter() - t0, 3)
            self.checkpoint()
        except Exception:
            log.exception("model update failed")

    def checkpoint(self) -> None:
        """Save model + watermarks atomically (write beside, then rename)."""
        with self._sync_lock:
            state = Path(self.cfg.serving.state_dir)
            state.mkdir(parents=True, exist_ok=True)
            tmp = state / "model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self.model.save(tmp)
            old = state / "model.old"
            shutil.rmtree(old, ignore_errors=True)
            if (state / "model").exists():
                (state / "model").rename(old)
            tmp.rename(state / "model")
            shutil.rmtree(old, ignore_errors=True)
            marks = {"version": CHECKPOINT_VERSION, "events": self.event_mark, "changes": self.change_mark,
                     "forgotten": self.forget_mark}
            (state / "watermarks.json.tmp").write_text(json.dumps(marks))
            (state / "watermarks.json.tmp").replace(state / "watermarks.json")

    # ================================================================ validation
    def _check_k(self, k: int) -> int:
        if not isinstance(k, int) or isinstance(k, bool):
            raise BadRequest(f"k must be an integer, got {k!r}")
        if k < 1 or k > self.cfg.serving.max_k:
            raise BadRequest(f"k must be between 1 and {self.cfg.serving.max_k}, got {k}")
        return k

    def _check_many(self, what: str, n: int) -> None:
        if n == 0:
            raise BadRequest(f"{what}: the list is empty")
        if n > self.cfg.serving.max_request_items:
            raise BadRequest(f"{what}: {n} entries exceed the limit of {self.cfg.serving.max_request_items} per call")

    def _item_table(self) -> ItemTable:
        ids = tuple(self.model.item_ids())
        cached = self._table
        if cached is None or cached[0] != ids:
            by_id = {it.item_id: it for it in self.model.items}
            self._table = cached = (ids, ItemTable(ids, [by_id[i].type for i in ids], [by_id[i].tags for i in ids]))
        return cached[1]

    # ================================================================ ranking
    def _rank(self, scores: np.ndarray, opts: Options, exclude: set[str]) -> tuple[np.ndarray, np.ndarray]:
        table = self._item_table()
        vectors = None
        if opts.diversity > 0:
            vectors = self.model.item_vectors("shared")[1]
            empty = np.linalg.norm(vectors, axis=1) == 0
            if empty.any():  # items with no content: fall back to their collaborative vectors
                collab = self.model.item_vectors("lightfm")[1][:, :-1]
                norms = np.linalg.norm(collab, axis=1, keepdims=True)
                vectors = vectors.copy()
                vectors[empty] = (collab / np.maximum(norms, 1e-12))[empty][:, :vectors.shape[1]] \
                    if collab.shape[1] >= vectors.shape[1] else 0.0
        try:
            r = rank(scores, table, opts.k, types=opts.types, tags=opts.tags,
                     exclude_ids=set(opts.exclude_item_ids) | exclude, mix=opts.mix, diversity=opts.diversity,
                     vectors=vectors)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return r.indices, r.scores

    def _respond(self, rows: np.ndarray, scores: np.ndarray, explanations: dict[str, dict] | None) -> list[dict]:
        items = self.model.items
        ids = self.model.item_ids()
        by_id = {it.item_id: it for it in items}
        out = []
        for r, s in zip(rows, scores):
            iid = ids[int(r)]
            it = by_id[iid]
            entry = {"item_id": iid, "type": it.type, "title": it.title, "score": round(float(s), 6)}
            if explanations is not None:
                entry["explanation"] = explanations.get(iid, {})
            out.append(entry)
        return out

    def recommend(self, user_id: str, opts: Options, exclude_seen: bool = True) -> dict:
        self._check_k(opts.k)
        try:
            scores = self.model.score_all(user_id)
        except UnknownUserError:
            raise NotFound(f"unknown user {user_id!r}: no interactions yet — use recommend_by_query "
                           "or send feedback first") from None
        exclude = self.seen(user_id) if exclude_seen else set()
        rows, sc = self._rank(scores, opts, exclude)
        expl = None
        if opts.explain and len(rows):
            recs = self.model.recommend(user_id, k=len(rows), exclude_seen=False, candidates=rows)
            expl = {r.item_id: r.explanation for r in recs}
        return {"user_id": user_id, "items": self._respond(rows, sc, expl)}

    def seen(self, user_id: str) -> set[str]:
        snap = self.model.snapshot
        ids = snap.item_ids
        try:
            u = snap.user_ids.index(user_id)
            seen = {ids[j] for j in snap.seen[u].indices}
        except ValueError:
            seen = set()
        return seen | self.store.seen_items(user_id)

    def recommend_by_query(self, vectors: dict[str, np.ndarray], liked_item_ids: Sequence[str], opts: Options,
                           describe: dict | None = None) -> dict:
        self._check_k(opts.k)
        liked = tuple(dict.fromkeys(liked_item_ids))
        query = self._query(vectors, liked)
        try:
            scores = self.model.score_all(query)
        except UnknownItemError as e:
            raise NotFound(str(e).strip("'\"")) from None
        rows, sc = self._rank(scores, opts, set(liked))
        expl = None
        if opts.explain and len(rows):
            recs = self.model.recommend_for_query(query, k=len(rows), exclude_liked=False, candidates=rows)
            expl = {r.item_id: r.explanation for r in recs}
        interests = [{"cluster": c, "label": lbl, "probability": round(p, 4)}
                     for c, lbl, p in self.model.user_interests(query, top=5)]
        return {"items": self._respond(rows, sc, expl), "query": {**(describe or {}), "interests": interests}}

    def _query(self, vectors: dict[str, np.ndarray], liked: tuple[str, ...]) -> Query:
        if not vectors and not liked:
            raise BadRequest("empty query: give text, an image, an audio clip and/or liked_item_ids")
        for m, v in vectors.items():
            if not np.all(np.isfinite(v)):
                raise BadRequest(f"the {m} input could not be encoded")
        index = self.model.item_index()
        missing = [i for i in liked if i not in index]
        if missing:
            raise NotFound(f"unknown liked item ids: {missing[:10]}")
        return Query(text_vec=vectors.get("text"), image_vec=vectors.get("image"), audio_vec=vectors.get("audio"),
                     liked_item_ids=liked)

    def similar_items(self, item_id: str, k: int, types: list[str] | None = None) -> dict:
        self._check_k(k)
        if types:
            self._item_table().mask(types=types)  # validates the type names
        try:
            recs = self.model.similar_items(item_id, k=k, types=types)
        except UnknownItemError:
            raise NotFound(f"unknown item {item_id!r}") from None
        by_id = {it.item_id: it for it in self.model.items}
        return {"item_id": item_id, "items": [
            {"item_id": r.item_id, "type": r.type, "title": by_id[r.item_id].title, "score": round(r.score, 6),
             "explanation": r.explanation} for r in recs]}

    def user_interests(self, user_id: str, top: int = 10) -> dict:
        try:
            dist = self.model.user_interests(user_id, top=top)
        except UnknownUserError:
            raise NotFound(f"unknown user {user_id!r}") from None
        return {"user_id": user_id,
                "interests": [{"cluster": c, "label": lbl, "probability": round(p, 4)} for c, lbl, p in dist]}

    # ================================================================ writes
    def add_items(self, items: list[Item], vectors: dict[str, dict[str, np.ndarray]]) -> dict:
        """Store items (+ their native vectors) durably, then make them recommendable at once."""
        self._check_many("items", len(items))
        index = self.model.item_index()
        dup = sorted({it.item_id for it in items if it.item_id in index})
        if dup:
            raise DuplicateItems(dup)
        self.tables.put_vectors({it.item_id: vectors.get(it.item_id, {}) for it in items})
        self.store.add_items(items)  # raises DuplicateItemsError (409) naming the ids
        self.sync()
        return {"added": [it.item_id for it in items], "catalog_size": len(self.model.items)}

    def delete_items(self, item_ids: list[str]) -> dict:
        self._check_many("item_ids", len(item_ids))
        gone = self.store.delete_items(item_ids)
        missing = sorted(set(item_ids) - set(gone))
        self.sync()
        return {"deleted": gone, "not_found": missing, "catalog_size": len(self.model.items)}

    def feedback(self, events: list[Interaction]) -> dict:
        """Acknowledge only after the database committed the events."""
        self._check_many("events", len(events))
        ids = self.store.record_feedback(events)
        self.sync()
        return {"accepted": len(ids), "event_ids": ids, "pending_for_update": self.pending_events}

    def forget_user(self, user_id: str) -> dict:
        removed = self.store.forget_user(user_id)
        known = user_id in set(self.model.known_users())
        if not known and removed["interactions"] == 0 and removed["users"] == 0:
            raise NotFound(f"unknown user {user_id!r}")
        self.tables.forget(user_id)
        self.sync()
        self.checkpoint()  # the trained artifacts still hold the user: persist the erasure now
        return {"user_id": user_id, "removed_interactions": removed["interactions"], "model_forgot": known}

    # ================================================================ info
    def info(self) -> dict:
        snap = self.model.snapshot
        return {
            "catalog": self.store.stats(),
            "model": {"items": len(snap.item_ids), "users": len(snap.user_ids),
                      "interest_clusters": self.model.codebook.size, "shared_dim": self.model.space.dim,
                      "pending_events": self.pending_events, "updates_done": self.updates_done,
                      "last_update_seconds": self.last_update_seconds},
            "watermarks": {"events": self.event_mark, "changes": self.change_mark},
        }


class DuplicateItems(ValueError):
    def __init__(self, ids: list[str]):
        super().__init__(f"items already exist: {ids[:10]}")
        self.ids = ids


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
