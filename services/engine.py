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

import gc
import logging
import threading
import time
from typing import Sequence

import numpy as np

from fusion.hybrid import FreshEvent, HybridModel, UnknownItemError, UnknownUserError, user_scores
from fusion.query import Query
from mixrec.catalog import Interaction, Item
from mixrec.config import ITEM_TYPES, MODALITIES, MixrecConfig
from mixrec.embeddings import ItemEmbeddings
from mixrec.errors import InputError, NotFoundError, ServerError, shown, shown_list
from mixrec.events import negative_events
from mixrec.ranking import ItemTable, parse_mix, rank
from mixrec.storage.media import MediaStore
from mixrec.storage.store import CatalogStore
from services.candidates import AnnCandidates, SnapshotMeta, exact_candidates, single_threaded_blas
from services.checkpoints import CheckpointDir
from services.schemas import RankingOptions

log = logging.getLogger("mixrec.engine")
POOL_FACTOR = 5  # mixrec.ranking.rank's default pool_factor: MMR looks at k * 5 (at least 50) per type


# The ranking options are the API's (services/schemas.py): one definition for HTTP, engine and CLI.
Options = RankingOptions


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


class RecommenderEngine:
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
        self._negative_events = negative_events(cfg.events)
        self._sync_lock = threading.Lock()
        self._update_lock = threading.Lock()
        self._update: _UpdateRun | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._table: tuple[SnapshotMeta, ItemTable] | None = None
        self._snap_meta: SnapshotMeta | None = None
        self.checkpoints = CheckpointDir(cfg.serving.state_dir)
        self.ann = AnnCandidates(cfg.serving.ann_threshold)
        single_threaded_blas()

    # ================================================================ lifecycle
    @classmethod
    def open(cls, cfg: MixrecConfig, start_background: bool = True) -> "RecommenderEngine":
        store = CatalogStore(cfg.storage.url)
        found = CheckpointDir(cfg.serving.state_dir).load(store.database_id, store.high_water_marks())
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
        held = {it.item_id: it for it in self.model.items if it.item_id in fresh} if any(
            i in index for i in fresh) else {}
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
        t0 = time.perf_counter()
        pending, covered = self.pending_events, self.event_mark
        self.model.fit_partial(epochs=epochs or self.cfg.serving.update_epochs)
        self.pending_events = max(0, self.pending_events - pending)
        self.trained_mark = max(self.trained_mark, covered)
        self.updates_done += 1
        self.last_update_seconds = round(time.perf_counter() - t0, 3)
        self.checkpoint()

    def checkpoint(self) -> None:
        """Save model + watermarks as one atomic checkpoint (see services/checkpoints.py)."""
        with self._sync_lock:
            marks = {"events": self.event_mark, "changes": self.change_mark, "forgotten": self.forget_mark,
                     "trained_events": self.trained_mark}
            self.checkpoints.save(self.model, marks, self.store.database_id)

    def _after_commit(self, what: str, checkpoint: bool = False) -> bool:
        """Apply a committed write to the model. The write is durable whatever happens here: a failure
        is logged and retried by the background sync, never answered as an error."""
        try:
            self.sync()
            if checkpoint:
                self.checkpoint()
            return True
        except Exception:
            self.sync_failures += 1
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

    def _meta(self, snap) -> SnapshotMeta:
        """Row-aligned item metadata for ``snap``; rebuilt only when its item ids change."""
        meta = self._snap_meta
        if meta is None or not (meta.ids is snap.item_ids or meta.ids == snap.item_ids):
            by_id = {it.item_id: it for it in self.model.items}
            meta = self._snap_meta = SnapshotMeta.build(snap.item_ids, snap.item_types, by_id)
        return meta

    def _item_table(self) -> ItemTable:
        meta = self._meta(self.model.snapshot)
        cached = self._table
        if cached is None or cached[0] is not meta:
            self._table = cached = (meta, ItemTable(meta.ids, [it.type for it in meta.items],
                                                    [it.tags for it in meta.items]))
        return cached[1]

    # ================================================================ ranking
    # Scoring path: narrow the catalog to the candidates ``rank`` can pick from (per type in play,
    # its ``pool`` best allowed items — exactly, or through the ANN indexes at ann_threshold items
    # and above), re-score them exactly, and rank a table of candidates only. Explanations are
    # computed for the chosen rows only.
    def _plan(self, opts: Options) -> tuple[list[int], int]:
        """(type codes in play, candidates each needs); validates types and mix."""
        spec = parse_mix(opts.mix, opts.k, opts.types)
        if not 0.0 <= opts.diversity <= 1.0:
            raise InputError(f"diversity must be in [0, 1], got {shown(opts.diversity)}")
        pool = opts.k if opts.diversity == 0 else max(opts.k * POOL_FACTOR, 50)
        return [ITEM_TYPES.index(t) for t in spec.types], pool

    def _allowed(self, snap, meta: SnapshotMeta, opts: Options, exclude_rows: np.ndarray) -> np.ndarray:
        allowed = meta.tag_mask(opts.tags) if opts.tags else np.ones(len(meta.ids), bool)
        allowed[exclude_rows] = False
        return allowed

    def _exclude_rows(self, snap, user_row: int | None, user_id: str | None, extra: Sequence[str],
                      exclude_seen: bool = True) -> np.ndarray:
        """Rows never to return: ``extra``, the user's seen items (when asked) and always the items the
        user gave negative feedback on (one database read either way)."""
        index = snap.item_index
        rows = [index[i] for i in extra if i in index]
        if user_id is not None:
            stored = (self.store.seen_items(user_id) if exclude_seen
                      else self.store.user_items(user_id, events=self._negative_events) if self._negative_events
                      else set())
            rows += [index[i] for i in stored if i in index]
        out = np.asarray(rows, np.int64)
        if user_row is not None and exclude_seen:
            out = np.concatenate([out, snap.seen[user_row].indices.astype(np.int64)])
        return out

    def _rank(self, snap, meta: SnapshotMeta, cand: np.ndarray, scores: np.ndarray,
              opts: Options) -> tuple[np.ndarray, np.ndarray]:
        """``rank`` over candidate rows (filters already applied); returns catalog rows and scores."""
        cand, first = np.unique(cand, return_index=True)
        scores = scores[first]
        table = ItemTable([meta.ids[r] for r in cand], [ITEM_TYPES[c] for c in meta.type_codes[cand]])
        vectors = None
        if opts.diversity > 0:
            vectors = snap.fused[cand]
            empty = np.linalg.norm(vectors, axis=1) == 0
            if empty.any():  # items with no content: fall back to their collaborative vectors
                collab = snap.item_repr[cand]
                vectors = vectors.copy()
                if collab.shape[1] >= vectors.shape[1]:
                    unit = collab / np.maximum(np.linalg.norm(collab, axis=1, keepdims=True), 1e-12)
                    vectors[empty] = unit[empty][:, :vectors.shape[1]]
                else:
                    vectors[empty] = 0.0
        r = rank(scores, table, opts.k, types=opts.types, mix=opts.mix, diversity=opts.diversity, vectors=vectors)
        return cand[r.indices], r.scores

    def _respond(self, meta: SnapshotMeta, rows: np.ndarray, scores: np.ndarray,
                 explanations: list[dict] | None) -> list[dict]:
        out = []
        for n, (r, s) in enumerate(zip(rows, scores)):
            it = meta.items[int(r)]
            entry = {"item_id": it.item_id, "type": it.type, "title": it.title, "score": round(float(s), 6)}
            if explanations is not None:
                entry["explanation"] = explanations[n]
            out.append(entry)
        return out

    def recommend(self, user_id: str, opts: Options, exclude_seen: bool = True, cold: bool = False) -> dict:
        """Top-k for a user: the trained vector with the user's fresh events folded in (``_fold_in``).

        A user with no events at all is a 404 suggesting ``recommend_by_query``, or with ``cold``
        the most popular items flagged ``cold: true``.
        """
        self._check_k(opts.k)
        fold = self._fold_in(user_id)
        snap = fold.snapshot
        if not fold.personalised and fold.user_row is None and not len(fold.rows):
            if not cold:
                raise NotFoundError(f"unknown user {shown(user_id)}: no interactions yet — use recommend_by_query "
                                    "or send feedback first (or ask with cold: true for popular items)")
            return self._popular(snap, user_id, opts, exclude_seen)
        u = fold.user_row
        types, pool = self._plan(opts)
        meta = self._meta(snap)
        exclude = self._exclude_rows(snap, u, user_id, opts.exclude_item_ids, exclude_seen)
        allowed = self._allowed(snap, meta, opts, exclude)
        user = fold.vector
        cand = self._ann_candidates(snap, meta, user, allowed, types, pool, len(exclude), bool(opts.tags))
        if cand is None:
            scores = user_scores(snap, user)
            cand = exact_candidates(scores, meta, allowed, types, pool)
            cand_scores = scores[cand]
        else:
            cand_scores = user_scores(snap, user, cand)
        rows, sc = self._rank(snap, meta, cand, cand_scores, opts)
        expl = self.model.explain_rows(fold, rows, sc) if opts.explain and len(rows) else None
        return {"user_id": user_id, "items": self._respond(meta, rows, sc, expl),
                "fresh_events": int(len(fold.rows)), "cold": False}

    def _fold_in(self, user_id: str):
        """The user's newest events above the trained watermark (at most ``serving.fold_in_events``),
        folded into their vector by the model (fusion.hybrid ``HybridModel.fold_in``)."""
        n = self.cfg.serving.fold_in_events
        fresh = []
        if n:
            fresh = [FreshEvent(e.item_id, e.event, e.weight, e.timestamp) for e in
                     self.store.interactions(since_id=self.trained_mark, user_id=user_id, limit=n, newest_first=True)]
        return self.model.fold_in(user_id, fresh, now=time.time(), prior=self.cfg.serving.fold_in_prior)

    def _popular(self, snap, user_id: str, opts: Options, exclude_seen: bool) -> dict:
        """Most-interacted items for a user the service knows nothing about (``cold: true``)."""
        types, pool = self._plan(opts)
        meta = self._meta(snap)
        allowed = self._allowed(snap, meta, opts, self._exclude_rows(snap, None, user_id, opts.exclude_item_ids,
                                                                     exclude_seen))
        scores = np.log1p(snap.counts) + 1e-6 * snap.item_bias  # ties (no interactions) by the model's prior
        cand = exact_candidates(scores, meta, allowed, types, pool)
        rows, sc = self._rank(snap, meta, cand, scores[cand], opts)
        expl = [{"popularity": int(snap.counts[r])} for r in rows] if opts.explain else None
        return {"user_id": user_id, "items": self._respond(meta, rows, sc, expl), "fresh_events": 0, "cold": True}

    def _ann_candidates(self, snap, meta: SnapshotMeta, user: np.ndarray, allowed: np.ndarray, types: list[int],
                        pool: int, n_excluded: int, tags_filtered: bool) -> np.ndarray | None:
        """Candidate rows from the ANN indexes plus items added since they were built; None: go exact."""
        if not self.ann.active_for(snap):
            return None
        self.ann.refresh(snap)  # background; this request uses the indexes there are
        view = self.ann.view(snap)
        if view is None:
            return None
        query = np.append(user, np.float32(1.0)).astype(np.float32)
        cand = self.ann.candidates(view, query, allowed, types, pool, n_excluded, tags_filtered)
        fresh = view.fresh
        if fresh.size:
            fresh = fresh[allowed[fresh] & np.isin(meta.type_codes[fresh], types)]
            cand = np.concatenate([cand, fresh])
        return cand

    def seen(self, user_id: str) -> set[str]:
        snap = self.model.snapshot
        ids = snap.item_ids
        u = snap.user_index.get(user_id)
        seen = {ids[j] for j in snap.seen[u].indices} if u is not None else set()
        return seen | self.store.seen_items(user_id)

    def recommend_by_query(self, vectors: dict[str, np.ndarray], liked_item_ids: Sequence[str], opts: Options,
                           describe: dict | None = None) -> dict:
        self._check_k(opts.k)
        liked = tuple(dict.fromkeys(liked_item_ids))
        query = self._query(vectors, liked)
        scored = self.model.score_query(query)  # one snapshot: its rows, scores and explanations agree
        snap, scores = scored.snapshot, scored.scores
        types, pool = self._plan(opts)
        meta = self._meta(snap)
        allowed = self._allowed(snap, meta, opts, self._exclude_rows(snap, None, None, list(liked) +
                                                                        list(opts.exclude_item_ids)))
        cand = exact_candidates(scores, meta, allowed, types, pool)
        rows, sc = self._rank(snap, meta, cand, scores[cand], opts)
        expl = self.model.explain_rows(scored, rows) if opts.explain and len(rows) else None
        interests = [{"cluster": c, "label": lbl, "probability": round(p, 4)}
                     for c, lbl, p in self.model.user_interests(scored, top=5)]
        return {"items": self._respond(meta, rows, sc, expl), "query": {**(describe or {}), "interests": interests}}

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
            self._item_table().mask(types=types)  # validates the type names
        try:
            recs = self.model.similar_items(item_id, k=k, types=types)
        except UnknownItemError:
            raise NotFoundError(f"unknown item {shown(item_id)}") from None
        by_id = {it.item_id: it for it in self.model.items}
        return {"item_id": item_id, "items": [
            {"item_id": r.item_id, "type": r.type, "title": by_id[r.item_id].title, "score": round(r.score, 6),
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
        return {"added": [it.item_id for it in items], "catalog_size": len(self.model.items), "applied": applied}

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
        return {"deleted": gone, "not_found": missing, "catalog_size": len(self.model.items), "applied": applied}

    def feedback(self, events: list[Interaction]) -> dict:
        """Acknowledge only after the database committed the events."""
        self._check_many("events", len(events))
        unknown = sorted({e.event for e in events} - set(self.cfg.events))
        if unknown:
            raise InputError(f"unknown event type(s) {shown_list(unknown)}; configured event types: "
                             f"{sorted(self.cfg.events)}")
        ids = self.store.record_feedback(events)
        applied = self._after_commit("feedback")
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
            "model": {"items": len(snap.item_ids), "users": len(snap.user_ids),
                      "interest_clusters": self.model.codebook.size, "shared_dim": self.model.space.dim,
                      "pending_events": self.pending_events, "updates_done": self.updates_done,
                      "last_update_seconds": self.last_update_seconds},
            "watermarks": {"events": self.event_mark, "changes": self.change_mark, "forgotten": self.forget_mark,
                           "trained_events": self.trained_mark},
            "sync_failures": self.sync_failures,
        }
