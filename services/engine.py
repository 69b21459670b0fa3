"""RecommenderEngine: the Recommender's request layer, minus HTTP and encoders.

Three parts, each in its own module:
  * this one: validation of every request, the read API (recommend, recommend_by_query,
    similar_items, user_interests, info) and the write façade (add/delete items, feedback,
    forget), which commits to the database first and then asks the replica to catch up;
  * services/pipeline.py: the ranking pipeline (candidates exact or ANN, filters, exclusions,
    mix, diversity, explanations) — the same one ``mixrec recommend`` runs;
  * services/replica.py: the model kept in step with the database (sync, watermarks,
    checkpoints, erasure replay, background updates).

The BentoML service encodes raw input through the encoder services and calls in here with
native-space vectors, so the whole API can be tested in-process.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from fusion.hybrid import HybridModel
from fusion.query import Query
from fusion.snapshot import UnknownItemError, UnknownUserError
from mixrec.catalog import Interaction, Item
from mixrec.config import MixrecConfig
from mixrec.errors import InputError, NotFoundError, ServerError, shown, shown_list
from mixrec.events import negative_events
from mixrec.ranking import check_types
from mixrec.storage.media import MediaStore
from mixrec.storage.store import CatalogStore
from services.candidates import AnnCandidates, single_threaded_blas
from services.coalesced_sync import CoalescedSync
from services.pipeline import Options, RankingPipeline
from services.replica import Replica

__all__ = ["Options", "RecommenderEngine"]
log = logging.getLogger("mixrec.engine")


# The replica's state, readable on the engine (the service, tests and benchmarks read it here).
REPLICA_STATE = frozenset({"model", "store", "media", "checkpoints", "event_mark", "change_mark", "forget_mark",
                           "trained_mark", "pending_events", "updates_done", "last_update_seconds", "sync_failures",
                           "model_channel", "model_version"})


class RecommenderEngine:
    def __init__(self, cfg: MixrecConfig, model: HybridModel, store: CatalogStore, media: MediaStore,
                 watermarks: dict[str, int] | None = None, *, replica: Replica | None = None) -> None:
        self.cfg = cfg
        self.replica = replica or Replica(cfg, model, store, media, watermarks)
        self._negative_events = negative_events(cfg.events)
        self.ann = AnnCandidates.for_config(cfg)  # persisted indexes: state_dir/ann, the artifacts' ann/
        self.pipeline = RankingPipeline(lambda: self.replica.model, self.ann)
        # Writes that commit at the same time share one catch-up of the model (services/coalesced_sync.py).
        self._catch_up = CoalescedSync(lambda: self.replica.sync())
        single_threaded_blas()

    def __getattr__(self, name: str):  # only for names the engine itself does not have
        if name in REPLICA_STATE:
            return getattr(self.replica, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ================================================================ lifecycle (the replica's)
    @classmethod
    def open(cls, cfg: MixrecConfig, start_background: bool = True) -> "RecommenderEngine":
        replica = Replica.open(cfg, start_background)
        return cls(cfg, replica.model, replica.store, replica.media, replica=replica)

    def bootstrap_catalog(self) -> None:
        self.replica.bootstrap_catalog()

    def start_background(self) -> None:
        self.replica.start_background()

    def close(self) -> None:
        self.replica.close()

    def sync(self) -> dict[str, int]:
        return self.replica.sync()

    def update_model(self, wait: bool = True, epochs: int | None = None) -> dict:
        return self.replica.update_model(wait, epochs)

    def checkpoint(self) -> None:
        self.replica.checkpoint()

    def _after_commit(self, what: str, checkpoint: bool = False) -> bool:
        """Apply a committed write to the model. The write is durable whatever happens here: a failure
        is logged and retried by the background sync, never answered as an error. Concurrent writes
        share one sync that started after all of them committed (``CoalescedSync``)."""
        try:
            self._catch_up()
            if checkpoint:
                self.checkpoint()
            return True
        except Exception:
            self.replica.sync_failures += 1
            log.exception("%s committed, but applying it to the model failed; the background sync retries", what)
            return False

    # ================================================================ validation
    def _check_k(self, k: int) -> int:
        if not isinstance(k, int) or isinstance(k, bool):
            raise InputError(f"k must be an integer, got {shown(k)}")
        if k < 1 or k > self.cfg.serving.max_k:
            raise InputError(f"k must be between 1 and {self.cfg.serving.max_k}, got {shown(k, 40)}")
        return k

    def _check_many(self, what: str, n: int) -> None:
        if n == 0:
            raise InputError(f"{what}: the list is empty")
        if n > self.cfg.serving.max_request_items:
            raise InputError(f"{what}: {n} entries exceed the limit of {self.cfg.serving.max_request_items} per call")

    # ================================================================ reads
    def recommend(self, user_id: str, opts: Options, exclude_seen: bool = True, cold: bool = False) -> dict:
        """Top-k for a user: the trained vector with the user's fresh events folded in (``Replica.fold_in``).

        A user with no events at all is a 404 suggesting ``recommend_by_query``, or with ``cold``
        the most popular items flagged ``cold: true``.
        """
        self._check_k(opts.k)
        fold = self.replica.fold_in(user_id)
        unknown = not fold.personalised and fold.user_row is None and not len(fold.rows)
        if unknown and not cold:
            raise NotFoundError(f"unknown user {shown(user_id)}: no interactions yet — use recommend_by_query "
                                "or send feedback first (or ask with cold: true for popular items)")
        stored = self._stored_exclusions(user_id, exclude_seen)
        if unknown:
            items = self.pipeline.popular(fold.snapshot, opts, stored)
            return {"user_id": user_id, "items": items, "fresh_events": 0, "cold": True}
        items = self.pipeline.for_user(fold, opts, stored, exclude_seen)
        return {"user_id": user_id, "items": items, "fresh_events": int(len(fold.rows)), "cold": False}

    def _stored_exclusions(self, user_id: str, exclude_seen: bool) -> set[str]:
        """What the database says never to return to the user: everything they have seen (when asked),
        and always the items they gave negative feedback on (one database read either way)."""
        if exclude_seen:
            return self.store.seen_items(user_id)
        if self._negative_events:
            return self.store.user_items(user_id, events=self._negative_events)
        return set()

    def seen(self, user_id: str) -> set[str]:
        snap = self.model.snapshot
        u = snap.user_index.get(user_id)
        return {snap.item_ids[j] for j in snap.seen_rows(u)} | self.store.seen_items(user_id)

    def recommend_by_query(self, vectors: dict[str, np.ndarray], liked_item_ids: Sequence[str], opts: Options,
                           describe: dict | None = None) -> dict:
        self._check_k(opts.k)
        liked = tuple(dict.fromkeys(liked_item_ids))
        query = self._query(vectors, liked)
        scored = self.model.score_query(query)  # one snapshot: its rows, scores and explanations agree
        items = self.pipeline.for_query(scored, opts)
        interests = [{"cluster": c, "label": lbl, "probability": round(p, 4)}
                     for c, lbl, p in self.model.user_interests(scored, top=5)]
        return {"items": items, "query": {**(describe or {}), "interests": interests}}

    def _query(self, vectors: dict[str, np.ndarray], liked: tuple[str, ...]) -> Query:
        if not vectors and not liked:
            raise InputError("empty query: give text, an image, an audio clip and/or liked_item_ids")
        for m, v in vectors.items():
            if not np.all(np.isfinite(v)):
                raise InputError(f"the {m} input could not be encoded")
        index = self.model.item_index()
        missing = [i for i in liked if i not in index]
        if missing:
            raise NotFoundError(f"unknown liked item ids: {shown_list(missing)}")
        return Query(text_vec=vectors.get("text"), image_vec=vectors.get("image"), audio_vec=vectors.get("audio"),
                     liked_item_ids=liked)

    def similar_items(self, item_id: str, k: int, types: list[str] | None = None) -> dict:
        self._check_k(k)
        if types:
            check_types(types, "types filter", self.model.snapshot.type_names)
        try:
            recs = self.model.similar_items(item_id, k=k, types=types)
        except UnknownItemError:
            raise NotFoundError(f"unknown item {shown(item_id)}") from None
        return {"item_id": item_id, "items": [
            {"item_id": r.item_id, "type": r.type, "title": self.model.item_title(r.item_id), "score": round(r.score, 6),
             "explanation": r.explanation} for r in recs]}

    def user_interests(self, user_id: str, top: int = 10) -> dict:
        try:
            dist = self.model.user_interests(user_id, top=top)
        except UnknownUserError:
            raise NotFoundError(f"unknown user {shown(user_id)}") from None
        return {"user_id": user_id,
                "interests": [{"cluster": c, "label": lbl, "probability": round(p, 4)} for c, lbl, p in dist]}

    # ================================================================ writes
    # Each write commits to the database first (the database decides duplicates and unknown ids),
    # then is applied to this model; once committed it is answered with success whatever happens next.
    def add_items(self, items: list[Item], vectors: dict[str, dict[str, np.ndarray]]) -> dict:
        """Store items (+ their native vectors) durably, then make them recommendable at once."""
        self._check_many("items", len(items))
        self._check_vectors(vectors)
        # Items and their vectors commit together; raises DuplicateItemsError (409) naming the ids.
        self.store.add_items(items, vectors={it.item_id: vectors.get(it.item_id, {}) for it in items})
        applied = self._after_commit("add_items")
        return {"added": [it.item_id for it in items], "catalog_size": self.model.items.n_live, "applied": applied}

    def _check_vectors(self, vectors: dict[str, dict[str, np.ndarray]]) -> None:
        """Refuse, before anything is committed, vectors this model cannot apply."""
        dims = getattr(self.model.space, "dims", {}) or {}
        for item_id, mods in vectors.items():
            for m, v in mods.items():
                want = dims.get(m)
                if want is not None and np.asarray(v).size != want:
                    raise ServerError(f"the {m} encoder returned {np.asarray(v).size}-d vectors but the model was "
                                      f"trained on {want}-d ones (item {shown(item_id)}); nothing was stored — "
                                      "the served encoders do not match the trained artifacts")
                if not np.all(np.isfinite(v)):
                    raise InputError(f"the {m} input of item {shown(item_id)} could not be encoded")

    def delete_items(self, item_ids: list[str]) -> dict:
        self._check_many("item_ids", len(item_ids))
        gone = self.store.delete_items(item_ids)
        missing = sorted(set(item_ids) - set(gone))
        applied = self._after_commit("delete_items")
        return {"deleted": gone, "not_found": missing, "catalog_size": self.model.items.n_live, "applied": applied}

    def feedback(self, events: list[Interaction]) -> dict:
        """Acknowledge only after the database committed the events."""
        self._check_many("events", len(events))
        unknown = sorted({e.event for e in events} - set(self.cfg.events))
        if unknown:
            raise InputError(f"unknown event type(s) {shown_list(unknown)}; configured event types: "
                             f"{sorted(self.cfg.events)}")
        ids = self.store.record_feedback(events)
        applied = self._after_commit("feedback")
        self.replica.observer.accepted(len(events))
        return {"accepted": len(ids), "event_ids": ids, "pending_for_update": self.pending_events,
                "applied": applied}

    def forget_user(self, user_id: str) -> dict:
        known = user_id in self.model.snapshot.user_index
        if not known and not self.store.user_exists(user_id):
            raise NotFoundError(f"unknown user {shown(user_id)}")
        # One transaction: the interactions go and the erasure log (what other replicas and restarts
        # from the trained artifacts read) records it, or neither happens.
        removed = self.store.forget_user(user_id)
        # The trained artifacts still hold the user: persist the erasure in a checkpoint now.
        applied = self._after_commit("forget_user", checkpoint=True)
        return {"user_id": user_id, "removed_interactions": removed["interactions"], "model_forgot": known,
                "applied": applied}

    # ================================================================ info
    def info(self) -> dict:
        snap = self.model.snapshot
        return {
            "catalog": self.store.stats(),
            "model": {"items": len(snap.item_ids) - snap.items.n_dead,
                      "users": len(snap.user_ids), "item_types": list(snap.type_names),
                      "interest_clusters": self.model.codebook.size, "shared_dim": self.model.space.dim,
                      "adjusted_config": self.model.space.adjustments(),
                      "pending_events": self.pending_events, "updates_done": self.updates_done,
                      "last_update_seconds": self.last_update_seconds, "version": self.model_version,
                      **({"channel": self.model_channel.status()} if self.model_channel is not None else {})},
            "watermarks": {"events": self.event_mark, "changes": self.change_mark, "forgotten": self.forget_mark,
                           "trained_events": self.trained_mark},
            "sync_failures": self.sync_failures,
        }
