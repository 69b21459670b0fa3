"""The e2e harness retries a start that lost a port race, and nothing else (tests/server_harness.py).

A stand-in for ``bentoml serve`` (a tiny HTTP server taking the same arguments) keeps these fast:
what is tested is the harness, not BentoML.
"""

from __future__ import annotations

import socket
import sys
import textwrap

import httpx
import pytest

import server_harness

FAKE_SERVE = textwrap.dedent("""\
    import http.server, sys
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    if "{fail}":
        sys.exit("{fail}")

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Ready).serve_forever()  # OSError: Address already in use
    """)


@pytest.fixture
def fake_bentoml(tmp_path, monkeypatch):
    def make(fail: str = "") -> None:
        exe = tmp_path / "fake-bentoml"
        exe.write_text(f"#!{sys.executable}\n" + FAKE_SERVE.replace("{fail}", fail))
        exe.chmod(0o755)
        monkeypatch.setattr(server_harness, "bentoml_executable", lambda: str(exe))
    return make


def _ports(monkeypatch, first: int) -> list[int]:
    """``free_port`` answers ``first`` once (a port someone holds), then really free ports."""
    given: list[int] = []
    real = server_harness.free_port

    def free_port() -> int:
        given.append(first if not given else real())
        return given[-1]
    monkeypatch.setattr(server_harness, "free_port", free_port)
    return given


def test_a_start_that_lost_its_port_is_retried_on_a_new_port(fake_bentoml, monkeypatch, tmp_path):
    fake_bentoml()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        given = _ports(monkeypatch, taken)
        with server_harness.serve_bento("svc:Svc", log_dir=tmp_path / "logs", timeout_s=30, grace_s=2) as srv:
            assert srv.port != taken
            assert httpx.get(f"{srv.url}/readyz").status_code == 200
    assert len(given) == 2
    assert server_harness.PORT_RACE in (tmp_path / "logs" / f"bentoml-serve-{taken}.log").read_text()


def test_a_start_that_failed_for_another_reason_is_not_retried(fake_bentoml, monkeypatch, tmp_path):
    fake_bentoml(fail="model not found")
    given = _ports(monkeypatch, server_harness.free_port())
    with pytest.raises(RuntimeError, match="model not found"):
        with server_harness.serve_bento("svc:Svc", log_dir=tmp_path / "logs", timeout_s=30, grace_s=2):
            pass
    assert len(given) == 1
