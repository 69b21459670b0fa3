"""Bounded Prometheus label cardinality: unknown request paths share one ``endpoint`` label.

BentoML's ``RunnerTrafficMetricsMiddleware`` (bentoml/_internal/server/http/instruments.py)
labels its request counters, histograms and gauges with the raw ``scope["path"]``. It is
the OUTERMOST middleware of every service app (``_bentoml_impl/server/app.py``,
``ServiceAppFactory.middlewares``), so it runs before any middleware a service adds and
every distinct path a client invents, even one refused with a 401 or a 404, becomes new
series: 3,000 random-path POSTs grew /metrics from 147 KB to 12.9 MB. BentoML 1.4.40 has
no setting for this (``api_server.metrics`` only has ``enabled``, ``namespace`` and
``duration``).

WHAT THIS PATCHES: ``install_bounded_metrics_paths()`` replaces the module attribute
``bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware`` with
``BoundedPathMetricsMiddleware``, a subclass that hands its parent a scope whose ``path``
is the path of the app's route that matches the request (a service API, a system route
such as /readyz, a mount such as /static_content) or ``UNKNOWN_PATH`` when none does, and
passes the untouched scope on to the app. ``ServiceAppFactory.middlewares`` imports the
class from that module each time it builds an app, so the patch must run before the
app is built: at import of the service module (``services.http_guards``), which BentoML's
worker does before ``service.to_asgi()``.

RE-CHECK ON EVERY BENTOML UPGRADE that ``ServiceAppFactory.middlewares`` still imports
``RunnerTrafficMetricsMiddleware`` from ``bentoml._internal.server.http.instruments`` at
call time and that the class still reads the label from ``scope["path"]`` in
``__call__`` and calls ``self.app``; tests/test_http_guards.py
(``test_random_paths_do_not_grow_metrics``) fails when the patch stops working.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mixrec.metrics_paths")

UNKNOWN_PATH = "/__unknown__"
_ORIGINAL_SCOPE = "mixrec.original_scope"
# BentoML's system routes (get_system_routes): the fallback when the scope carries no Starlette app.
SYSTEM_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})


def metrics_path(scope) -> str:
    """The label for ``scope``: the matching route's path template, or ``UNKNOWN_PATH``."""
    path = scope.get("path", "")
    app = scope.get("app")  # Starlette sets scope["app"] before running its middleware stack
    routes = getattr(getattr(app, "router", None), "routes", None)
    if routes is None:
        from bentoml._internal.context import server_context

        return path if path in SYSTEM_PATHS or path in server_context.service_routes else UNKNOWN_PATH
    from starlette.routing import Match

    for route in routes:
        try:
            match, _ = route.matches(scope)
        except Exception:  # a route that cannot judge this scope does not name it
            continue
        if match is not Match.NONE:
            # Route.path is the template ("/recommend"), Mount.path the mount point ("/static_content"):
            # bounded either way. A route without a path (a bare ASGI app) shares the unknown label.
            return getattr(route, "path", None) or UNKNOWN_PATH
    return UNKNOWN_PATH


def _metrics_class():
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "_mixrec_bounded_paths", False):
        return instruments, base

    class BoundedPathMetricsMiddleware(base):
        """``RunnerTrafficMetricsMiddleware`` labelling requests by route, never by raw path."""

        _mixrec_bounded_paths = True

        def __init__(self, app, *args, **kwargs) -> None:
            super().__init__(app, *args, **kwargs)
            self._inner_app = app
            self.app = self._with_original_scope  # the parent calls self.app(scope-with-label, ...)

        async def _with_original_scope(self, scope, receive, send):
            await self._inner_app(scope.get(_ORIGINAL_SCOPE, scope), receive, send)

        async def __call__(self, scope, receive, send):
            if scope["type"] not in ("http", "websocket"):
                return await self._inner_app(scope, receive, send)
            label = metrics_path(scope)
            if label == scope.get("path"):
                return await super().__call__(scope, receive, send)
            return await super().__call__({**scope, "path": label, _ORIGINAL_SCOPE: scope}, receive, send)

    BoundedPathMetricsMiddleware.__qualname__ = BoundedPathMetricsMiddleware.__name__
    return instruments, BoundedPathMetricsMiddleware


def install_bounded_metrics_paths() -> None:
    """Replace BentoML's metrics middleware class with the bounded-label subclass (idempotent)."""
    try:
        instruments, cls = _metrics_class()
    except (ImportError, AttributeError):
        log.warning("BentoML's RunnerTrafficMetricsMiddleware not found: metrics path labels are not bounded")
        return
    instruments.RunnerTrafficMetricsMiddleware = cls
