"""What a person sees and an operator runs by, hooked onto the Recommender in two calls.

``install(service, config)`` (at import of services/recommender.py, after the HTTP guards):

* the demo page (services/ui/static, plain files: no build step, nothing to rebuild when the API
  changes, and the repository holds exactly what the browser runs) mounted at ``/ui``;
  ``GET /`` redirects to it and BentoML's Swagger UI moves to ``/docs``;
* ``GET /media/{item_id}/{kind}`` (services/ui/media.py);
* mixrec's Prometheus metrics (services/ops_metrics.py), their middleware outermost;
* one access-log line per request and, with ``serving.log_json``, JSON log lines (services/request_log.py).

``bind(engine)`` (in ``Recommender.__init__``) gives the metrics and the media endpoint this worker's engine,
and starts loading its ANN indexes; ``ready(engine)`` is this module's part of ``/readyz``.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "ui" / "static"
UI_PATH = "/ui"
DOCS_PATH = "/docs"
_engine = None


def bind(engine) -> None:
    global _engine
    from services import ops_metrics

    _engine = engine
    ops_metrics.bind(engine)
    engine.ann.refresh(engine.replica.model.snapshot)  # load (or build) the ANN indexes now, not at the first request


def ready(engine) -> bool:
    """Not ready while the catalogue needs ANN indexes and none were loaded (or built) yet: a replica
    that answers before would scan the whole catalogue per request (services/candidates.py)."""
    return engine is not None and engine.ann.ready(engine.replica.model.snapshot)


class LandingMiddleware:
    """``GET /`` -> the demo page; ``GET /docs`` -> BentoML's own index (the Swagger UI), which stays
    reachable; its assets are relative (``./static_content/...``), so they resolve from ``/docs`` too."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            path = scope.get("path")
            if path == "/":
                await send({"type": "http.response.start", "status": 307,
                            "headers": [(b"location", f"{UI_PATH}/".encode()), (b"content-length", b"0")]})
                return await send({"type": "http.response.body", "body": b""})
            if path == DOCS_PATH:
                return await self.app({**scope, "path": "/", "raw_path": b"/"}, receive, send)
        return await self.app(scope, receive, send)


def ui_app():
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/", StaticFiles(directory=STATIC, html=True), name="ui-static")])


def install(service, config) -> None:
    from services import ops_metrics
    from services.request_log import RequestLogMiddleware, use_json_logs
    from services.ui.media import media_app

    service.mount_asgi_app(ui_app(), path=UI_PATH, name="ui")
    service.mount_asgi_app(media_app(lambda: _engine), path="/media", name="media")
    service.add_asgi_middleware(LandingMiddleware)
    # Outermost (before the error shape, CORS, API key and body cap): they see every answer, refusals included.
    if not any(cls is RequestLogMiddleware for cls, _ in service.middlewares):
        service.middlewares.insert(0, (RequestLogMiddleware, {}))
    ops_metrics.install(service)
    if config.serving.log_json:
        use_json_logs()


COUNTS_NOTE = ("database: what this deployment stored (the catalogue, and the users and feedback events received "
               "over the API); model: what the served model was trained on (the training set's users and items) "
               "plus the updates since. A user can be trained in the model with no row in the database, and an "
               "event in the database waits in events_pending until update_model trains it.")


def info_counts(stats: dict) -> dict:
    """``info``'s counts, each named for where it is counted (issue 16: "1 user in the database beside
    400 in the model" read as a contradiction)."""
    catalog, model = stats["catalog"], stats["model"]
    return {"database": {"items": catalog["items"], "items_by_type": catalog.get("items_by_type", {}),
                         "users": catalog["users"], "events": catalog["interactions"]},
            "model": {"items": model["items"], "users_trained": model["users"],
                      "events_pending": model["pending_events"], "updates_done": model["updates_done"]},
            "note": COUNTS_NOTE}
