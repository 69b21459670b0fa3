"""Start a server subprocess in its own session and stop its whole process tree.

``bentoml serve`` runs a circus arbiter whose workers call ``setsid()`` (bentoml issue
#4193), so killing the server's process group alone can leave workers behind. This
tracks every descendant by pid while the server runs, sends SIGTERM to the group,
and SIGKILLs whatever of the tracked tree outlives the grace period. It only ever
signals processes it started or their descendants.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

import psutil


class ProcessTree:
    def __init__(self, cmd: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None,
                 output: IO | None = None) -> None:
        self.process = subprocess.Popen(list(cmd), cwd=str(cwd) if cwd else None, env=dict(env),
                                        stdout=output, stderr=subprocess.STDOUT if output else None,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self._seen: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def track(self) -> None:
        """Remember every current descendant (call it while the server runs, e.g. while polling)."""
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                self._seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def stop(self, grace_s: float = 10.0) -> None:
        self.track()
        if self.running():
            _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self.running() or any(map(_alive, self._seen.values()))):
            time.sleep(0.2)
        for proc in self._seen.values():
            if _alive(proc):
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
        if self.running():
            _signal_group(self.pid, signal.SIGKILL)
        self.process.wait(timeout=grace_s)
        psutil.wait_procs(list(self._seen.values()), timeout=grace_s)

    def kill(self) -> None:
        """SIGKILL the whole tree at once, without a grace period: a crashed host or an evicted pod."""
        self.track()
        _signal_group(self.pid, signal.SIGKILL)
        for proc in self._seen.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(timeout=30)
        psutil.wait_procs(list(self._seen.values()), timeout=30)

    def leftovers(self) -> list[int]:
        """Pids of the tracked tree still alive (empty after a successful ``stop``)."""
        alive = [p.pid for p in self._seen.values() if _alive(p)]
        return ([self.pid] if self.running() else []) + alive


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session made pid its group's leader
    except ProcessLookupError:
        pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def poll_http_ready(url: str, timeout_s: float, check_alive: Callable[[], None]) -> str | None:
    """GET ``url`` every 0.5 s until it answers 200 (returns None) or ``timeout_s`` passes (returns what it
    last saw). ``check_alive()`` runs before each try and raises when the server is gone."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no response yet"
    while time.monotonic() < deadline:
        check_alive()
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return None
            last = f"answered {r.status_code}"
        except httpx.HTTPError as e:
            last = type(e).__name__
        time.sleep(0.5)
    return last


def wait_http_ready(tree: ProcessTree, url: str, timeout_s: float, log_tail=lambda: "") -> None:
    """Poll ``url`` until it answers 200; raise RuntimeError (with ``log_tail()``) on exit or timeout."""
    def alive() -> None:
        if not tree.running():
            raise RuntimeError(f"server exited with code {tree.process.returncode} before it was ready"
                               f"{_tail(log_tail())}")
        tree.track()

    last = poll_http_ready(url, timeout_s, alive)
    if last is not None:
        raise RuntimeError(f"server not ready after {timeout_s:.0f}s ({url}: {last}){_tail(log_tail())}")


def _tail(text: str) -> str:
    return f"; log tail:\n{text}" if text else ""
