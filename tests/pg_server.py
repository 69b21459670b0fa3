"""A throwaway PostgreSQL server for tests, started from Debian's binaries.

``postgres_url`` (fixture) gives a fresh, empty database per test on one server per
test session: initdb into a temporary directory, ``postgres`` listening on a free
loopback port, stopped by its own pid at the end. PostgreSQL refuses to run as
root, so under root the server runs as the ``postgres`` system user (created by the
Debian package) or ``nobody``. When no server can be started (package missing,
psycopg missing) the tests that need it skip and say why. ``.ci/postgres.sh``
installs the package on CI.

Import the fixtures into a test module: ``from pg_server import postgres_server, postgres_url``.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

START_TIMEOUT_S = 30.0


def find_pg_bindir() -> Path | None:
    """Directory holding initdb and postgres: $MIXREC_PG_BINDIR, Debian's newest, or $PATH."""
    explicit = os.environ.get("MIXREC_PG_BINDIR")
    candidates = [explicit] if explicit else []
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                    if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += debian
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server under when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists")


class PostgresServer:
    """One postgres process on 127.0.0.1:<port>; trust auth, user ``mixrec``."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.account = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="mixrec-pg-"))
        self.data_dir = self.root / "data"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._db_counter = itertools.count()

    def _popen_kwargs(self) -> dict:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": str(self.root), "USER": self.account.pw_name}}

    def start(self) -> "PostgresServer":
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        init = subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "mixrec",
                               "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                              capture_output=True, text=True, timeout=120, cwd=self.root, **self._popen_kwargs())
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-2000:]}")
        last_error = ""
        for _attempt in range(3):  # the free port can be taken between probe and bind: retry
            self.port = _free_port()
            log = open(self.root / "postgres.log", "ab")
            # Durability settings off: a throwaway test server, never a crash test of PostgreSQL itself.
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                 "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=50"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
                **self._popen_kwargs())
            log.close()
            ready, last_error = self._wait_ready()
            if ready:
                atexit.register(self.stop)
                return self
            self.stop()
        raise RuntimeError(f"postgres did not start: {last_error}")

    def _wait_ready(self) -> tuple[bool, str]:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        error = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                return False, f"exited with {self.proc.returncode}: {tail}"
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return True, ""
            except psycopg.OperationalError as e:
                error = str(e)
                time.sleep(0.1)
        return False, f"not accepting connections after {START_TIMEOUT_S}s: {error}"

    def dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=mixrec dbname={dbname}"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://mixrec@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._db_counter)}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # postgres: "fast shutdown"
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc is not None or self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)


_shared: dict = {"server": None, "users": 0, "error": None}


def _acquire() -> PostgresServer:
    if _shared["error"]:
        pytest.skip(_shared["error"])
    if _shared["server"] is None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _shared["error"] = "PostgreSQL tests need psycopg (pip install 'psycopg[binary]')"
            pytest.skip(_shared["error"])
        bindir = find_pg_bindir()
        if bindir is None:
            _shared["error"] = ("no PostgreSQL server binaries found (apt-get install postgresql, "
                                "or set MIXREC_PG_BINDIR); run .ci/postgres.sh")
            pytest.skip(_shared["error"])
        try:
            _shared["server"] = PostgresServer(bindir).start()
        except Exception as e:  # noqa: BLE001 - any failure to start means "skip, and say why"
            _shared["error"] = f"could not start a throwaway PostgreSQL from {bindir}: {e}"
            pytest.skip(_shared["error"])
    _shared["users"] += 1
    return _shared["server"]


def _release() -> None:
    _shared["users"] -= 1
    if _shared["users"] == 0 and _shared["server"] is not None:
        _shared["server"].stop()
        _shared["server"] = None


@pytest.fixture(scope="session")
def postgres_server():
    """One server for the whole session, shared by every module that imports this fixture."""
    server = _acquire()
    try:
        yield server
    finally:
        _release()


@pytest.fixture
def postgres_url(postgres_server):
    """A URL to a fresh, empty database, dropped after the test."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh database URL on each backend: a SQLite file, then a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/mixrec.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    from mixrec.storage.store import CatalogStore

    with CatalogStore(store_url) as s:
        yield s
