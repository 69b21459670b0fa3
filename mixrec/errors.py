"""The one error hierarchy: every error mixrec raises on purpose carries the HTTP status it maps to.

The service answers ``err.status`` with ``str(err)`` for a ``MixrecError`` and a 500 for
anything else (a bug, logged once with its traceback). So only the typed errors below
can become a 4xx: a stray ``ValueError`` from a library or a programming mistake stays a 500.
Messages name the problem; values echoed from a request go through ``shown`` so that a
1 MB id cannot come back as a 1 MB error body or log line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ECHO_CHARS = 80  # longest echoed value in a message
ECHO_ITEMS = 10  # most values echoed from one list
MAX_MESSAGE_CHARS = 2000  # longest message an error body or log line carries


def shown(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with the original length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


def shown_list(values: Iterable[Any], limit: int = ECHO_ITEMS) -> str:
    """Up to ``limit`` values, each ``shown``, and how many were left out."""
    values = list(values)
    head = ", ".join(shown(v) for v in values[:limit])
    more = f" (and {len(values) - limit} more)" if len(values) > limit else ""
    return f"[{head}]{more}"


def clip_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return message if len(message) <= limit else f"{message[:limit]}…(message cut at {limit} chars)"


class MixrecError(Exception):
    """Base class. ``status`` is the HTTP status; ``code`` a stable machine-readable name."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str = "") -> None:
        super().__init__(clip_message(message))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.code


class InputError(MixrecError, ValueError):
    """The request is invalid (400). Also a ``ValueError`` for library callers."""

    status, code = 400, "bad_request"


class ForbiddenError(MixrecError):
    status, code = 403, "forbidden"


class NotFoundError(MixrecError, LookupError):
    """An id the caller named does not exist (404). Not a ``KeyError``: its message is not quoted."""

    status, code = 404, "not_found"


class ConflictError(MixrecError):
    status, code = 409, "conflict"


class PayloadTooLargeError(InputError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaTypeError(InputError):
    status, code = 415, "unsupported_media_type"


class UnavailableError(MixrecError):
    """A dependency (an encoder service) is overloaded, restarting or too slow: retry later (503)."""

    status, code = 503, "unavailable"


class ServerError(MixrecError):
    """An operation failed on the server side and the caller waited for it (500, with a message)."""

    status, code = 500, "internal_error"


# The one error body every mixrec HTTP error has (the service, its ASGI guards and its
# normaliser of BentoML's own error answers all write it):
#   {"error": {"status": 404, "code": "not_found", "message": "unknown user 'u-1'"}}
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
                422: "bad_request", 429: "too_many_requests", 500: "internal_error", 503: "unavailable",
                504: "timeout"}


def error_payload(status: int, message: str, code: str | None = None) -> dict:
    code = code or STATUS_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    return {"error": {"status": int(status), "code": code, "message": clip_message(str(message))}}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    import json

    return json.dumps(error_payload(status, message, code)).encode()
