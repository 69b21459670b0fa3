"""Replica: the Recommender's in-memory model kept in step with the database (no HTTP, no ranking).

It owns the trained HybridModel (an in-memory cache), the durable CatalogStore (the source of
truth) and the media directory. The request layer (services/engine.py) commits writes to the
database and asks the replica to catch up; it reads the model the replica holds.

Consistency model:
  * a write (items, feedback, forget) is committed to the database first and
    applied to the model second, so an acknowledged write is never lost;
  * the model checkpoints itself to ``serving.state_dir`` with the ids of the
    last database rows it has applied (watermarks); on start it loads the
    checkpoint (or the trained artifacts) and replays what came after;
  * a background thread polls the database every ``serving.sync_interval_s``,
    which is how replicas sharing one PostgreSQL see each other's writes, and
    runs ``fit_partial`` when ``serving.update_every`` new events arrived;
  * an erasure (forget a user) is replayed as: drop the user, then re-apply the
    user's events that are newer than the erasure.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Sequence

import numpy as np

from fusion.hybrid import HybridModel
from fusion.scoring import FoldIn, FreshEvent
from fusion.snapshot import UnknownUserError
from mixrec.catalog import Item
from mixrec.config import MODALITIES, MixrecConfig
from mixrec.embeddings import ItemEmbeddings
from mixrec.errors import ServerError
from mixrec.storage.media import MediaStore
from mixrec.storage.store import CatalogStore
from services.checkpoints import CheckpointDir
from services.replica_observer import ReplicaObserver

log = logging.getLogger("mixrec.engine")


def load_trained_model(artifacts: str) -> HybridModel:
    if artifacts.startswith("bentoml:"):
        return HybridModel.load_from_model_store(artifacts[len("bentoml:"):])
    return HybridModel.load(artifacts)


class _UpdateRun:
    """One background ``fit_partial``; whoever waits on it learns whether it failed."""

    def __init__(self, target) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target,), name="mixrec-update", daemon=True)

    def _run(self, target) -> None:
        try:
            target()
        except BaseException as e:  # noqa: BLE001 - recorded for the waiter, logged once
            self.error = e
            log.exception("model update failed")


class Replica:
    def __init__(self, cfg: MixrecConfig, model: HybridModel, store: CatalogStore, media: MediaStore,
                 watermarks: dict[str, int] | None = None) -> None:
        self.cfg = cfg
        self.model = model
        self.model.event_rules = cfg.events  # the serving config says what each event type means
        self.model.recency_half_life_days = cfg.model.recency_half_life_days  # and how fast events age
        self.store = store
        self.media = media
        marks = watermarks or {}
        self.event_mark = int(marks.get("events", 0))
        self.change_mark = int(marks.get("changes", 0))
        self.forget_mark = int(marks.get("forgotten", 0))
        # Events with ids up to trained_mark were in the model when its embeddings were last trained
        # (the event_mark when the last fit_partial started); the rest are folded in at request time.
        # 0 after a start from the trained artifacts: every stored event is newer than them.
        self.trained_mark = int(marks.get("trained_events", 0))
        self.pending_events = 0
        self.updates_done = 0
        self.last_update_seconds: float | None = None
        self.sync_failures = 0
        self._sync_lock = threading.Lock()
        self._update_lock = threading.Lock()
        self._update: _UpdateRun | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.checkpoints = CheckpointDir(cfg.serving.state_dir)
        self.observer = ReplicaObserver()  # the operator's metrics replace it (services/ops_metrics.py)
        self.model_channel = None  # hot swap across replicas (services/hot_swap.py), set by open()
        self.model_version: str | None = None  # the published version served (None: not from the channel)

    # ================================================================ lifecycle
    @classmethod
    def open(cls, cfg: MixrecConfig, start_background: bool = True) -> "Replica":
        from services.hot_swap import ModelChannel

        store = CatalogStore(cfg.storage.url)
        channel = ModelChannel.from_config(cfg)  # start from the newest published version when there is one
        found = ((channel.load_latest(store) if channel else None)
                 or CheckpointDir(cfg.serving.state_dir).load(store.database_id, store.high_water_marks()))
        if found is not None:
            model, marks = found
        else:
            model, marks = load_trained_model(cfg.serving.artifacts), {}
            log.info("loaded trained artifacts %s", cfg.serving.artifacts)
        limits = cfg.limits
        media = MediaStore(cfg.storage.media_dir, {"image": limits.max_image_bytes, "audio": limits.max_audio_bytes,
                                                   "video": limits.max_video_bytes})
        # A big catalog is millions of long-lived objects: keep them out of every later GC pass
        # (at 1M items this cut add_items(16) from 3.6 s to under 1 s, see BENCHMARKS.md).
        gc.collect()
        gc.freeze()
        replica = cls(cfg, model, store, media, marks)
        if channel is not None:
            replica.model_channel = channel
            channel.attach(replica)
        replica.bootstrap_catalog()
        replica.sync()
        if start_background:
            replica.start_background()
        return replica

    def bootstrap_catalog(self) -> None:
        """First start on an empty database: the trained catalog becomes the stored catalog."""
        if self.store.count_items() == 0 and self.model.items:
            from mixrec.storage.errors import DuplicateItemsError

            try:
                self.store.add_items(self.model.items)
            except DuplicateItemsError:  # another replica starting at the same time stored them first:
                return  # the same items, which the next sync finds already held
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
        run = self._update
        if run is not None:
            run.thread.join(timeout=60)
        try:
            self.checkpoint()
        except Exception:  # the database still holds every write: a restart replays it
            log.exception("final checkpoint failed")
        self.store.close()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.cfg.serving.sync_interval_s):
            try:
                if self.model_channel is not None:
                    self.model_channel.follow()  # a newer published model: swap it in (it replays the database)
                self.sync()
            except Exception:  # keep serving; the next round retries
                self.sync_failures += 1
                log.exception("background sync failed")

    # ================================================================ database -> model
    def sync(self) -> dict[str, int]:
        """Apply database rows this model has not seen yet (other replicas' writes, restarts).

        Reads the event log first, then the catalog and erasure logs: every event's item was
        committed before the event, so the catalog read sees it. Applies catalog changes, then
        events, then erasures (each followed by a replay of the user's surviving events, which
        are all newer than the erasure).
        """
        applied = {"items_added": 0, "items_removed": 0, "events": 0, "forgotten": 0}
        with self._sync_lock:
            events = self.store.interactions(since_id=self.event_mark)
            changes = self.store.catalog_changes(since_id=self.change_mark)
            erasures = self.store.forgotten_since(self.forget_mark)
            if changes:
                applied["items_removed"], applied["items_added"] = self._apply_changes(changes)
                self.change_mark = max(c.id for c in changes)
            if events:
                applied["events"] = self._apply_events(events)
                self.event_mark = max(e.id for e in events)
            for fid, user in erasures:
                applied["forgotten"] += self._apply_erasure(user)
                self.forget_mark = fid
        if self.cfg.serving.update_every and self.pending_events >= self.cfg.serving.update_every:
            self.update_model(wait=False)
        return applied

    def _apply_changes(self, changes) -> tuple[int, int]:
        """The catalog log in commit order: the last change for an id wins."""
        last: dict[str, str] = {}
        for c in changes:
            last[c.item_id] = c.op
        index = self.model.item_index()
        dead = [i for i, op in last.items() if op == "delete" and i in index]
        fresh = {it.item_id: it for it in self.store.get_items([i for i, op in last.items() if op == "add"])}
        # An add for an id the model still holds means it was deleted and re-added (here or on another
        # replica): replace it unless the stored content is the same.
        held = {i: it for i in fresh if i in index and (it := self.model.item(i)) is not None}
        stale = [i for i, it in held.items() if it != fresh[i]]
        if dead or stale:
            self.model.remove_items(dead + stale)
        todo = [it for i, it in fresh.items() if i not in held or i in stale]
        vecs = self.store.get_vectors([it.item_id for it in todo]) if todo else {}
        todo = [it for it in todo if it.item_id in vecs]
        if todo:
            self.model.add_items(todo, self._embeddings(todo, vecs))
        return len(dead) + len(stale), len(todo)

    def _apply_events(self, events) -> int:
        index = self.model.item_index()
        batch = [e.to_interaction() for e in events if e.item_id in index]
        if batch:
            self.model.add_interactions(batch)  # the model weighs each by its event type's rule
        self.pending_events += len(batch)
        return len(batch)

    def _apply_erasure(self, user: str) -> int:
        try:
            self.model.forget_user(user)
        except UnknownUserError:
            return 0
        index = self.model.item_index()
        again = [e.to_interaction() for e in self.store.interactions(user_id=user)
                 if e.id <= self.event_mark and e.item_id in index]
        if again:
            self.model.add_interactions(again)
        return 1

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
        A caller that waits learns of a failure (``ServerError``); nobody is told "done" for a
        run that failed.
        """
        with self._update_lock:
            running = self._update is not None and self._update.thread.is_alive()
            if not running:
                self._update = _UpdateRun(lambda: self._run_update(epochs))
                self._update.thread.start()
            run = self._update
        if wait:
            run.thread.join()
            if run.error is not None:
                raise ServerError(f"model update failed: {type(run.error).__name__}: {run.error}; the feedback "
                                  "is safe in the database and the next update retries it")
        return {"started": not running, "running": run.thread.is_alive(), "updates_done": self.updates_done,
                "last_update_seconds": self.last_update_seconds}

    def _run_update(self, epochs: int | None) -> None:
        t0, pending = time.perf_counter(), self.pending_events
        try:
            self._fit_and_publish(epochs)
        except BaseException:
            self.observer.updated(time.perf_counter() - t0, False, 0)
            raise
        self.observer.updated(time.perf_counter() - t0, True, max(0, pending - self.pending_events))

    def _fit_and_publish(self, epochs: int | None) -> None:
        t0 = time.perf_counter()
        pending, covered = self.pending_events, self.event_mark
        self.model.fit_partial(epochs=epochs or self.cfg.serving.update_epochs)
        self.pending_events = max(0, self.pending_events - pending)
        self.trained_mark = max(self.trained_mark, covered)
        self.updates_done += 1
        self.last_update_seconds = round(time.perf_counter() - t0, 3)
        self.checkpoint()
        if self.model_channel is not None:
            self.model_channel.publish()  # the other replicas swap it in

    def checkpoint(self, into: CheckpointDir | None = None):
        """Save model + watermarks as one atomic checkpoint (see services/checkpoints.py) into the state
        directory, or ``into`` another one (the shared model channel); returns the saved directory."""
        t0 = time.perf_counter()
        try:
            with self._sync_lock:
                marks = {"events": self.event_mark, "changes": self.change_mark, "forgotten": self.forget_mark,
                         "trained_events": self.trained_mark}
                saved = (into or self.checkpoints).save(self.model, marks, self.store.database_id)
        except BaseException:
            self.observer.checkpointed(time.perf_counter() - t0, False)
            raise
        self.observer.checkpointed(time.perf_counter() - t0, True)
        return saved

    def update_running(self) -> bool:
        run = self._update
        return run is not None and run.thread.is_alive()

    def adopt(self, model: HybridModel, watermarks: dict[str, int]) -> None:
        """Serve ``model`` (saved at ``watermarks``) from now on: the hot-swap hook (services/hot_swap.py).

        The database rows after its watermarks are replayed into it beside the serving model first —
        by a second replica over the same store that never trains — then once more under the sync lock
        for rows committed meanwhile, and only then is it swapped in: no request sees it behind the
        database (an erased user or a deleted item coming back), none waits for the load.
        """
        quiet = self.cfg.model_copy(update={"serving": self.cfg.serving.model_copy(update={"update_every": 0})})
        fresh = type(self)(quiet, model, self.store, self.media, watermarks)
        fresh.sync()
        with self._sync_lock:
            fresh.sync()
            self.model = fresh.model
            self.event_mark, self.change_mark = fresh.event_mark, fresh.change_mark
            self.forget_mark, self.trained_mark = fresh.forget_mark, fresh.trained_mark
            self.pending_events = fresh.pending_events

    # ================================================================ fresh feedback
    def fold_in(self, user_id: str) -> FoldIn:
        """The user's newest events above the trained watermark (at most ``serving.fold_in_events``),
        folded into their vector over the current snapshot (fusion/scoring.py ``fold_in``)."""
        n = self.cfg.serving.fold_in_events
        fresh = []
        if n:
            fresh = [FreshEvent(e.item_id, e.event, e.weight, e.timestamp) for e in
                     self.store.interactions(since_id=self.trained_mark, user_id=user_id, limit=n, newest_first=True)]
        return self.model.fold_in(user_id, fresh, now=time.time(), prior=self.cfg.serving.fold_in_prior)
