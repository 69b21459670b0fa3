"""One access-log line per request (request id, endpoint, status, duration), and the JSON log switch.

With ``serving.log_json`` every ``mixrec.*`` log line is one JSON object (``JsonFormatter``): an
access line carries ``request_id``, ``endpoint`` (the bounded route label of
services/metrics_paths.py, never the raw path), ``status`` and ``duration_ms``; an error line
logged while serving a request carries the same ``request_id``. Client errors (4xx) are INFO
without a traceback, server errors ERROR; the one traceback of a 5xx is the one
``services.recommender._error_response`` logs. A hand-written formatter (20 lines) instead of
python-json-logger: it needs the request id from a context variable, which is most of the code.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import sys
import time

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("mixrec_request_id", default=None)
access_log = logging.getLogger("mixrec.access")
SKIP = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})  # probes and scrapes: no line each


class RequestIds:
    """Unique request ids without a system call per request: 16 random hex digits drawn once per
    process, then a counter (32 hex digits, as uuid4().hex had). ``uuid4`` reads os.urandom, which
    releases the GIL on the event loop; under load the loop then waited for the GIL behind the worker
    threads on every request (py-spy: 5% of the loop's time in uuid4, issue 12 part 6)."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)  # a forked worker must not repeat its parent's ids

    def reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count(1)  # next() on a count is atomic under the GIL

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


new_request_id = RequestIds()


class JsonFormatter(logging.Formatter):
    FIELDS = ("request_id", "endpoint", "status", "duration_ms", "method")

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        if rid:
            out["request_id"] = rid
        for f in self.FIELDS[1:]:
            if hasattr(record, f):
                out[f] = getattr(record, f)
        if record.exc_info and record.exc_info[0] is not None:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def use_json_logs() -> None:
    """``mixrec.*`` loggers write JSON lines to stderr (idempotent)."""
    logger = logging.getLogger("mixrec")
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class RequestLogMiddleware:
    """Give each request an id (``X-Request-ID`` when the caller sent a sane one), answer it in the same
    header, and log one line when the answer starts: INFO below 500, ERROR from 500 (no traceback here)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in SKIP:
            return await self.app(scope, receive, send)
        from services.metrics_paths import metrics_path

        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if given and len(given) <= 64 and given.replace("-", "").isalnum() else new_request_id()
        token = REQUEST_ID.set(rid)
        t0 = time.perf_counter()
        endpoint = metrics_path(scope)  # now: routing rewrites the scope of a mounted app

        async def logging_send(message):
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
                ms = round((time.perf_counter() - t0) * 1000, 1)
                access_log.log(logging.ERROR if status >= 500 else logging.INFO,
                               "%s %s -> %d in %.1f ms", scope.get("method"), endpoint, status, ms,
                               extra={"request_id": rid, "endpoint": endpoint, "status": status,
                                      "duration_ms": ms, "method": scope.get("method")})
            await send(message)

        try:
            return await self.app(scope, receive, logging_send)
        finally:
            REQUEST_ID.reset(token)
