"""JSON log lines (serving.log_json): one object per line, request id carried, one traceback for a 5xx."""

from __future__ import annotations

import json
import logging

from services.recommender import _error_response
from services.request_log import REQUEST_ID, JsonFormatter


def _capture():
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(JsonFormatter().format(r))  # formatted as emitted, in context
    log = logging.getLogger("mixrec.recommender")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def done():
        log.removeHandler(handler)
        log.setLevel(level)
    return records, done


def test_client_errors_log_info_without_traceback_and_server_errors_one_traceback():
    from mixrec.errors import InputError

    records, done = _capture()
    token = REQUEST_ID.set("rid-1")
    try:
        _error_response("recommend", InputError("k must be positive"))
        try:
            raise RuntimeError("boom")
        except RuntimeError as e:
            _error_response("recommend", e)
    finally:
        REQUEST_ID.reset(token)
        done()
    lines = [json.loads(r) for r in records]
    assert lines[0]["level"] == "INFO" and "traceback" not in lines[0] and lines[0]["request_id"] == "rid-1"
    assert lines[1]["level"] == "ERROR" and lines[1]["traceback"].count("Traceback (most recent call last)") == 1
    assert "RuntimeError: boom" in lines[1]["traceback"]


def test_generated_request_ids_are_unique_hex_and_differ_between_processes():
    import os

    from services.request_log import RequestIds

    ids = RequestIds()
    made = [ids() for _ in range(1000)]
    assert len(set(made)) == 1000 and all(len(r) == 32 and int(r, 16) >= 0 for r in made)
    other = RequestIds()  # another process draws another prefix
    assert other() not in made
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked child reseeds: its ids are not its parent's next ones
        os.write(w, ids().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 64).decode()
    assert child[:16] != made[0][:16] and child not in made
