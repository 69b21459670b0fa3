"""mixrec's own Prometheus metrics, served by BentoML's ``/metrics`` beside its request counters.

Every label set is bounded: item ``type`` (the three item types), ``source`` (model / database),
``modality`` (text / image / audio), ``result`` (ok / failed), ``reason`` (the fixed ``REFUSAL_REASONS``).
Under ``bentoml serve`` prometheus_client runs in multiprocess mode (BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker before it builds the service), so the metrics are
created lazily in the worker, never at import; state gauges keep the most recent value of the
live workers (``livemostrecent``), and the per-replica sync lag keeps one series per live worker
(``liveall`` adds a ``pid`` label, dropped when the worker exits).

State (catalogue, users, pending events, model age, ANN index: its size, load / build time, searches,
widenings, exact fallbacks and sampled recall) is read from the engine when
``/metrics`` is scraped (``MetricsMiddleware`` refreshes it first), so a scrape is never stale.
Durations and failures are recorded where they happen: the replica reports its updates, checkpoints
and accepted feedback to ``OpsObserver`` (``bind``); the encoder calls go through ``encoder_call``.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from mixrec.config import MODALITIES
from services.replica_observer import ReplicaObserver

log = logging.getLogger("mixrec.ops_metrics")
# HTTP status of a refused request -> the reason label (bounded: anything else is "other").
REFUSAL_REASONS = {401: "auth", 403: "forbidden", 404: "not_found", 400: "bad_request", 422: "bad_request",
                   413: "too_large", 415: "bad_media", 409: "conflict", 429: "overloaded", 503: "overloaded"}
STATE_MODE = "livemostrecent"

_lock = threading.Lock()
_metrics: dict | None = None
_engine = None
_model_published_at: float | None = None


def metrics() -> dict:
    """The metric objects, created once per process (after BentoML set up multiprocess mode)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _create()
        return _metrics


def _create() -> dict:
    from prometheus_client import Counter, Gauge, Histogram

    def gauge(name, doc, labels=(), mode=STATE_MODE):
        return Gauge(name, doc, list(labels), multiprocess_mode=mode)

    return {
        "items": gauge("mixrec_catalog_items", "Live catalogue items by type (database)", ["type"]),
        "users": gauge("mixrec_known_users", "Users known to the model / stored in the database", ["source"]),
        "events_stored": gauge("mixrec_events_stored", "Feedback events stored in the database"),
        "events_accepted": Counter("mixrec_events_accepted", "Feedback events accepted by this service's API"),
        "events_trained": Counter("mixrec_events_trained", "Feedback events applied to the model by fit_partial"),
        "events_pending": gauge("mixrec_events_pending",
                                "Events in the database the model has not trained on yet (lag database -> model)"),
        "model_version": gauge("mixrec_model_updates", "Model updates (fit_partial runs) since this worker started"),
        "model_age": gauge("mixrec_model_age_seconds", "Seconds since the served model was last trained or loaded"),
        "fit_seconds": gauge("mixrec_fit_partial_last_seconds", "Duration of the last fit_partial run"),
        "fit_ok": gauge("mixrec_fit_partial_last_success", "1 when the last fit_partial run succeeded, else 0"),
        "fits": Counter("mixrec_fit_partial", "fit_partial runs by result", ["result"]),
        "ckpt_seconds": gauge("mixrec_checkpoint_last_seconds", "Duration of the last checkpoint"),
        "ckpts": Counter("mixrec_checkpoints", "Checkpoints by result", ["result"]),
        "sync_lag": gauge("mixrec_sync_lag_events", "Database event ids this replica has not synced yet",
                          mode="liveall"),
        "sync_failures": gauge("mixrec_sync_failures", "Background sync rounds that failed in this replica",
                               mode="liveall"),
        "ann_items": gauge("mixrec_ann_index_items", "Items in the ANN candidate index (0 while exact search)"),
        "ann_seconds": gauge("mixrec_ann_last_rebuild_seconds", "Duration of the last ANN index build"),
        "ann_load_seconds": gauge("mixrec_ann_last_load_seconds",
                                  "Duration of the last load of persisted ANN indexes (instead of a build)"),
        "ann_bytes": gauge("mixrec_ann_index_bytes", "Bytes held by the ANN indexes (vectors, graph, id maps)"),
        # Totals since each worker started, summed over the live workers (read at scrape time, so gauges).
        "ann_searches": gauge("mixrec_ann_searches", "HNSW candidate searches", mode="livesum"),
        "ann_widenings": gauge("mixrec_ann_widenings",
                               "HNSW searches retried with a wider beam after returning too few results",
                               mode="livesum"),
        "ann_reentries": gauge("mixrec_ann_reentries",
                               "HNSW walks that came back short, walked again from the pivots nearest the query",
                               mode="livesum"),
        "ann_fallbacks": gauge("mixrec_ann_exact_fallbacks",
                               "HNSW searches still short after widening and re-entry, answered by an exact scan",
                               mode="livesum"),
        "ann_fallback_ratio": gauge("mixrec_ann_exact_fallback_ratio",
                                    "Exact fallbacks / HNSW searches since this worker started"),
        "ann_recall": gauge("mixrec_ann_recall",
                            "Recall@10 of sampled ANN candidate searches against an exact re-run (recent window)"),
        "ann_recall_samples": gauge("mixrec_ann_recall_samples", "ANN searches re-run exactly to measure recall",
                                    mode="livesum"),
        "enc_seconds": Histogram("mixrec_encoder_call_seconds", "Encoder call latency seen by the Recommender",
                                 ["modality"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
        "enc_failures": Counter("mixrec_encoder_failures", "Encoder calls that failed, seen by the Recommender",
                                ["modality"]),
        "refused": Counter("mixrec_requests_refused", "Requests refused with a 4xx, by reason", ["reason"]),
    }


def _init_series(m: dict) -> None:
    """Every labelled series exists from the start (at 0), so dashboards and alerts see them at once."""
    for s in ("model", "database"):
        m["users"].labels(source=s)
    for r in ("ok", "failed"):
        m["fits"].labels(result=r)
        m["ckpts"].labels(result=r)
    for mod in MODALITIES:
        m["enc_seconds"].labels(modality=mod)
        m["enc_failures"].labels(modality=mod)
    for reason in sorted(set(REFUSAL_REASONS.values()) | {"other"}):
        m["refused"].labels(reason=reason)
    # The "last ..." gauges appear once something was measured (no made-up value before that).


# ------------------------------------------------------------------ binding to the engine
def bind(engine) -> None:
    """Record this worker's engine: its state is read at scrape time; its replica tells ``OpsObserver``
    how updates, checkpoints and accepted feedback went."""
    global _engine, _model_published_at
    m = metrics()
    _init_series(m)
    for t in engine.model.snapshot.type_names:  # the catalogue's own labels (at most MAX_ITEM_TYPES)
        m["items"].labels(type=t)
    _engine, _model_published_at = engine, time.time()
    engine.replica.observer = OpsObserver()


class OpsObserver(ReplicaObserver):
    """The replica's updates, checkpoints and accepted feedback as metrics."""

    def updated(self, seconds: float, ok: bool, events_trained: int) -> None:
        global _model_published_at
        m = metrics()
        m["fits"].labels(result="ok" if ok else "failed").inc()
        m["fit_ok"].set(1 if ok else 0)
        m["fit_seconds"].set(seconds)
        if ok:
            m["events_trained"].inc(events_trained)
            _model_published_at = time.time()

    def checkpointed(self, seconds: float, ok: bool) -> None:
        m = metrics()
        m["ckpt_seconds"].set(seconds)
        m["ckpts"].labels(result="ok" if ok else "failed").inc()

    def accepted(self, events: int) -> None:
        metrics()["events_accepted"].inc(events)


@contextmanager
def encoder_call(modality: str):
    """Time one encoder call as the Recommender sees it (retries included); count it when it fails."""
    m = metrics()
    label = modality if modality in MODALITIES else "text"
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        m["enc_failures"].labels(modality=label).inc()
        raise
    finally:
        m["enc_seconds"].labels(modality=label).observe(time.perf_counter() - t0)


def refresh() -> None:
    """Read the bound engine's state into the gauges (called before each scrape)."""
    engine = _engine
    if engine is None:
        return
    m = metrics()
    replica = engine.replica
    stats = replica.store.stats()
    snap = replica.model.snapshot
    # Labels the model knows (codes are never dropped, so a type whose items are all gone reads 0)
    # and any the database holds.
    for t in dict.fromkeys([*snap.type_names, *stats["items_by_type"]]):
        m["items"].labels(type=t).set(stats["items_by_type"].get(t, 0))
    m["users"].labels(source="model").set(len(snap.user_ids))
    m["users"].labels(source="database").set(stats["users"])
    m["events_stored"].set(stats["interactions"])
    last_id = stats.get("last_interaction_id") or 0
    unsynced = max(0, int(last_id) - int(replica.event_mark))
    m["events_pending"].set(replica.pending_events + unsynced)
    m["sync_lag"].set(unsynced)
    m["sync_failures"].set(replica.sync_failures)
    m["model_version"].set(replica.updates_done)
    if _model_published_at is not None:
        m["model_age"].set(time.time() - _model_published_at)
    ann = engine.ann.describe()
    m["ann_items"].set(ann.get("built_items") or 0)
    m["ann_bytes"].set(ann["bytes"])
    if ann.get("last_build_seconds") is not None:
        m["ann_seconds"].set(ann["last_build_seconds"])
    if ann.get("last_load_seconds") is not None:
        m["ann_load_seconds"].set(ann["last_load_seconds"])
    m["ann_searches"].set(ann["searches"])
    m["ann_widenings"].set(ann["widenings"])
    m["ann_reentries"].set(ann["reentries"])
    m["ann_fallbacks"].set(ann["exact_fallbacks"])
    m["ann_fallback_ratio"].set(ann["exact_fallbacks"] / ann["searches"] if ann["searches"] else 0.0)
    m["ann_recall_samples"].set(ann["recall_samples"])
    if ann.get("recall") is not None:  # no made-up value before a sample was measured
        m["ann_recall"].set(ann["recall"])


class MetricsMiddleware:
    """Outermost mixrec middleware: counts refused requests by reason (from the final status, after
    the API-key check and the body cap answered) and refreshes the state gauges before ``/metrics``."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("path") == "/metrics":
            try:
                import asyncio

                await asyncio.to_thread(refresh)
            except Exception:  # a scrape must still answer: the gauges keep their last values
                log.exception("refreshing mixrec metrics failed")

        async def counting_send(message):
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                reason = REFUSAL_REASONS.get(message["status"], "other")
                try:
                    metrics()["refused"].labels(reason=reason).inc()
                except Exception:  # metrics never break an answer
                    log.exception("counting a refused request failed")
            await send(message)

        return await self.app(scope, receive, counting_send)


def install(service) -> None:
    """Put ``MetricsMiddleware`` outermost among the service's own middlewares."""
    if not any(cls is MetricsMiddleware for cls, _ in service.middlewares):
        service.middlewares.insert(0, (MetricsMiddleware, {}))
