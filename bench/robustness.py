"""Reliability of the served Recommender, measured on loopback (issue 6).

    .venv/bin/python bench/robustness.py                 # full run (~10 min on 2 cores)
    .venv/bin/python bench/robustness.py --quick --skip-postgres

Every server is a real ``bentoml serve services.recommender:Recommender`` on a free
127.0.0.1 port, stopped by its own pid (mixrec.process_tree). Sections:

  bad_input    50 malformed requests (tests/malformed_requests.py) each expecting a 4xx that
               names the problem, a bounded schemathesis run over /docs.json
               (``--checks not_a_server_error``), then a normal request must still work;
  load         ``--duration`` s of ``--clients`` concurrent callers, mixed workload;
  faults       kill -9 the TextEncoder worker during load (requests failed, time to
               recover), then restart the whole server (readiness time, counts intact);
  durability   one feedback event per request, kill -9 the whole process tree mid-stream,
               restart, every acknowledged event id must be in the database (SQLite and
               PostgreSQL);
  security     with an API key, every path of /docs.json but health refuses a missing or
               wrong key;
  attacks      the attack classes of the "Trust" issue (bench/attacks.py): hostile sample rates,
               decoded-size bombs, streamed bodies, metrics cardinality, echoed ids, inputs that
               used to 500, unsupported media, cross-site writes, lost writes (also on a
               2-worker server); requests, statuses, 5xx, lost writes and the peak RSS of each
               service process per class;
  guards_cost  p50/p99 of sequential ``recommend`` calls for a known user (compare commits).

    .venv/bin/python bench/robustness.py --only attacks        # attack classes + guards_cost alone
    .venv/bin/python bench/robustness.py --only guards_cost    # just the latency (runs on older commits too)
    git worktree add /tmp/base main && .venv/bin/python bench/robustness.py --only load \
        --load-baseline /tmp/base --profile-dir /tmp/prof   # the mixed load, before/after in one run (issue 12.6)

Writes bench/results/reliability.json and the reliability section of BENCHMARKS.md.
The demo artifacts come from ``mixrec demo --no-serve`` (run here when ``--data-dir``
has none), never under the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
# The repository first: bench/encoders.py (a script) must not shadow the encoders package, and as the
# running script's folder bench/ is sys.path[0]; bench/ and tests/ helpers are found after it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path += [str(ROOT / "tests"), str(ROOT / "bench")]

import httpx  # noqa: E402
import psutil  # noqa: E402

from load_client import run_load  # noqa: E402
from malformed_requests import CASES, check_response  # noqa: E402
from tools.packaging import OFFLINE_ENV  # noqa: E402
from mixrec.process_tree import ProcessTree  # noqa: E402

SERVICE = "services.recommender:Recommender"
RESULTS = ROOT / "bench" / "results" / "reliability.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"
OPEN_PATHS = {"/livez", "/healthz", "/readyz", "/metrics"}
READY_TIMEOUT_S = 240.0


# ================================================================ one served Recommender

class Served:
    """``bentoml serve`` of the Recommender on a fixed state (database, checkpoints, media)."""

    def __init__(self, env: dict[str, str], log_dir: Path, source: Path = ROOT) -> None:
        """``source``: the checkout whose code is served (another commit's worktree, for before/after)."""
        self.env, self.log_dir, self.source = env, log_dir, Path(source)
        self.tree: ProcessTree | None = None
        self.url = ""

    def start(self) -> float:
        """Seconds to ready (of the attempt that started; server_harness retries a lost port race)."""
        from server_harness import launch_bento

        env = dict(self.env)
        if self.source != ROOT:
            env.update(PYTHONPATH=str(self.source), MIXREC_CONFIG=str(self.source / "configs" / "offline.yaml"))
        server = launch_bento(SERVICE, env=env, log_dir=self.log_dir, cwd=self.source, timeout_s=READY_TIMEOUT_S,
                              grace_s=15)
        self.tree, self.url = server.tree, server.url
        return server.ready_s

    def processes(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.tree.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def worker_pid(self, service_name: str) -> int:
        """The worker started with ``--service-name service_name`` (every worker's command line also names
        the entry service, ``services.recommender:Recommender``: a substring match finds the wrong one)."""
        for p in self.processes():
            try:
                cmd = p.cmdline()
            except psutil.NoSuchProcess:
                continue
            if any(a == "--service-name" and b == service_name for a, b in zip(cmd, cmd[1:])):
                return p.pid
        raise RuntimeError(f"no {service_name} worker in the server's process tree")

    def kill_hard(self) -> None:
        """SIGKILL the server and every descendant, by pid (a crash: no shutdown hook runs)."""
        self.tree.track()
        procs = self.processes()
        for p in [psutil.Process(self.tree.pid)] + procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.tree.stop(grace_s=5)

    def stop(self) -> None:
        if self.tree is not None:
            self.tree.stop(grace_s=15)
            left = self.tree.leftovers()
            if left:
                raise RuntimeError(f"server left processes behind: {left}")
            self.tree = None


def serve_env(artifacts: Path, state: Path, db_url: str | None = None, **extra: str) -> dict[str, str]:
    state.mkdir(parents=True, exist_ok=True)
    # Its own BENTOML_HOME: `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir at start, which
    # would wipe the metrics of any other server (a test suite's) sharing the default home.
    return {"MIXREC_CONFIG": str(ROOT / "configs" / "offline.yaml"),
            "BENTOML_HOME": str(state / "bentoml"),
            "MIXREC__SERVING__ARTIFACTS": str(artifacts),
            "MIXREC__SERVING__STATE_DIR": str(state / "state"),
            "MIXREC__STORAGE__URL": db_url or f"sqlite:///{state / 'db.sqlite'}",
            "MIXREC__STORAGE__MEDIA_DIR": str(state / "media"),
            "MIXREC__SERVING__UPDATE_EVERY": "0", **extra}


def ensure_demo(data_dir: Path, items: int, users: int) -> Path:
    if not (data_dir / "artifacts").is_dir():
        cmd = [str(ROOT / ".venv" / "bin" / "mixrec"), "demo", "--no-serve", "--no-progress",
               "--data-dir", str(data_dir), "--items", str(items), "--users", str(users)]
        print("building demo artifacts:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **OFFLINE_ENV}, timeout=1800)
    return data_dir / "artifacts"


def demo_ids(data_dir: Path) -> dict[str, list[str]]:
    with open(data_dir / "interactions.csv") as f:
        rows = list(csv.DictReader(f))
    users = sorted({r["user_id"] for r in rows})
    items = sorted({json.loads(line)["item_id"] for line in (data_dir / "items.jsonl").read_text().splitlines()
                    if line.strip()})
    return {"users": users, "items": items}


def info(url: str) -> dict:
    r = httpx.post(f"{url}/info", json={}, timeout=60)
    r.raise_for_status()
    return r.json()


def normal_request_ok(url: str, user: str) -> bool:
    r = httpx.post(f"{url}/recommend", json={"user_id": user, "k": 5}, timeout=60)
    return r.status_code == 200 and len(r.json().get("items", [])) == 5


# ================================================================ 1. bad input

def bad_input(srv: Served, ids: dict, work: Path, max_examples: int, max_time_s: int) -> dict:
    ctx = {"user": ids["users"][0], "item": ids["items"][0]}
    failures = []
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        for case in CASES:
            r = c.post(f"/{case.path}", **case.request(ctx))
            problem = check_response(case, r.status_code, r.text)
            if problem:
                failures.append({"case": case.name, "problem": problem})
    fuzz = schemathesis_run(srv.url, work, max_examples, max_time_s)
    return {"cases": len(CASES), "apis_covered": sorted({c.path for c in CASES}), "case_failures": failures,
            "schemathesis": fuzz, "normal_request_after": normal_request_ok(srv.url, ctx["user"])}


def schemathesis_run(url: str, work: Path, max_examples: int, max_time_s: int) -> dict:
    """``st run`` over /docs.json with the not_a_server_error check; counts 5xx failures from its JUnit."""
    junit = work / "schemathesis.xml"
    cmd = [str(ROOT / ".venv" / "bin" / "st"), "run", f"{url}/docs.json", "--url", url,
           "--checks", "not_a_server_error", "--max-examples", str(max_examples), "--seed", "1",
           "--max-time", str(max_time_s), "--request-timeout", "60", "--no-color",
           "--report", "junit", "--report-junit-path", str(junit)]
    t0 = time.monotonic()
    # cwd: schemathesis and hypothesis keep their example databases there, not in the repository
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max_time_s + 120, cwd=work)
    tail = proc.stdout[-3000:]
    failed = []
    if junit.exists():
        for tc in ET.parse(junit).getroot().iter("testcase"):
            for f in list(tc.findall("failure")) + list(tc.findall("error")):
                failed.append(f"{tc.get('name')}: {(f.get('message') or f.text or '')[:200]}")
    generated = next((line.strip() for line in tail.splitlines() if re.match(r"\s*\d+ generated", line)), "")
    return {"version": _pkg_version(),
            "command": " ".join(cmd[1:]).replace(url, "<url>"), "exit_code": proc.returncode,
            "server_error_failures": len(failed), "failures": failed[:10], "test_cases": generated,
            "seconds": round(time.monotonic() - t0, 1)}


def _pkg_version() -> str:
    from importlib.metadata import version

    return version("schemathesis")


# ================================================================ 2./3. load and faults

def load(srv: Served, ids: dict, duration_s: float, clients: int) -> dict:
    result = asyncio.run(run_load(srv.url, duration_s=duration_s, clients=clients, users=ids["users"],
                                  items=ids["items"]))
    return result.summary()


def encoder_kill(srv: Served, ids: dict, duration_s: float, clients: int, kill_at_s: float) -> dict:
    """kill -9 the TextEncoder worker ``kill_at_s`` into a load run; measure failures and recovery."""
    victim = srv.worker_pid("TextEncoder")
    state: dict = {}

    async def scenario():
        async def killer():
            await asyncio.sleep(kill_at_s)
            os.kill(victim, signal.SIGKILL)
            t_kill = time.monotonic()
            while time.monotonic() - t_kill < duration_s:  # when does circus have a new worker up?
                await asyncio.sleep(0.2)
                try:
                    if await asyncio.to_thread(srv.worker_pid, "TextEncoder") != victim:
                        state["worker_back_s"] = round(time.monotonic() - t_kill, 2)
                        return
                except (RuntimeError, psutil.Error):
                    continue
        task = asyncio.create_task(killer())
        res = await run_load(srv.url, duration_s=duration_s, clients=clients, users=ids["users"],
                             items=ids["items"])
        await task
        return res

    res = asyncio.run(scenario())
    failed = res.errors
    # Text-query outage: the longest stretch after the kill with no text query completing successfully.
    done = sorted(s.t + s.latency_s for s in res.samples if s.api == "recommend_by_query" and s.ok)
    gaps = [(b - a, b) for a, b in zip(done, done[1:]) if b >= kill_at_s]
    outage, back_at = max(gaps, default=(None, None))
    in_flight = [s.latency_s for s in res.samples if s.t + s.latency_s >= kill_at_s]
    try:
        new_pid = srv.worker_pid("TextEncoder")
    except RuntimeError:
        new_pid = None
    return {"killed_pid": victim, "new_worker_pid": new_pid, "worker_restarted": new_pid not in (None, victim),
            "worker_process_back_s": state.get("worker_back_s"), "kill_at_s": kill_at_s,
            "requests": len(res.samples), "requests_failed": len(failed),
            "failed_by_api": {a: sum(s.api == a for s in failed) for a in sorted({s.api for s in failed})},
            "text_query_outage_s": round(outage, 2) if outage is not None else None,
            "text_queries_back_after_kill_s": round(back_at - kill_at_s, 2) if back_at is not None else None,
            "slowest_request_after_kill_s": round(max(in_flight), 2) if in_flight else None,
            "error_examples": sorted({s.error for s in failed})[:3],
            "normal_request_after": normal_request_ok(srv.url, ids["users"][0])}


def server_restart(srv: Served, ids: dict) -> dict:
    """Graceful stop and start on the same state: readiness time and identical counts."""
    r = httpx.post(f"{srv.url}/feedback", timeout=60, json={"events": [
        {"user_id": "restart-probe", "item_id": ids["items"][1], "event": "like"}]})
    r.raise_for_status()
    before = info(srv.url)["catalog"]
    srv.stop()
    ready_s = srv.start()
    after = info(srv.url)["catalog"]
    keys = ("items", "users", "interactions", "deleted_items")
    return {"ready_s": round(ready_s, 1), "before": {k: before[k] for k in keys},
            "after": {k: after[k] for k in keys}, "state_intact": all(before[k] == after[k] for k in keys),
            "probe_user_recommendable": normal_request_ok(srv.url, "restart-probe")}


# ================================================================ 4. durability

def durability(artifacts: Path, ids: dict, work: Path, backend: str, db_url: str | None,
               stream_s: float, streams: int) -> dict:
    """Stream single-event feedback, kill -9 the tree mid-stream, restart, look every acked id up."""
    from mixrec.storage.store import CatalogStore

    state = work / f"durability-{backend}"
    env = serve_env(artifacts, state, db_url)
    srv = Served(env, state)
    acked: list[int] = []
    unacked = 0

    async def stream(i: int, deadline: float):
        nonlocal unacked
        n = 0
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
            while time.monotonic() < deadline:
                ev = {"user_id": f"dur-{backend}-{i}", "item_id": ids["items"][n % len(ids["items"])],
                      "event": "play", "weight": 1.0}
                n += 1
                try:
                    r = await http.post("/feedback", json={"events": [ev]})
                except httpx.HTTPError:
                    unacked += 1
                    await asyncio.sleep(0.05)
                    continue
                if r.status_code == 200:
                    acked.extend(r.json()["event_ids"])
                else:
                    unacked += 1

    async def run():
        deadline = time.monotonic() + stream_s
        tasks = [asyncio.create_task(stream(i, deadline)) for i in range(streams)]
        await asyncio.sleep(stream_s * 0.6)
        await asyncio.to_thread(srv.kill_hard)  # mid-stream: requests are in flight
        await asyncio.gather(*tasks)

    try:
        srv.start()
        asyncio.run(run())
        ready_s = srv.start()
        served_count = info(srv.url)["catalog"]["interactions"]
    finally:
        srv.stop()
    store = CatalogStore(env["MIXREC__STORAGE__URL"], create=False)
    try:
        stored = {r.id for r in store.interactions(since_id=0)}
    finally:
        store.close()
    lost = sorted(set(acked) - stored)
    return {"backend": backend, "acknowledged": len(acked), "unacknowledged_or_failed": unacked,
            "lost": len(lost), "lost_ids": lost[:10], "stored_after_restart": len(stored),
            "served_interactions_after_restart": served_count, "restart_ready_s": round(ready_s, 1)}


def durability_postgres(artifacts: Path, ids: dict, work: Path, stream_s: float, streams: int) -> dict:
    from pg_server import PostgresServer, find_pg_bindir

    bindir = find_pg_bindir()
    if bindir is None:
        return {"backend": "postgresql", "skipped": "no PostgreSQL binaries (apt-get install postgresql)"}
    pg = PostgresServer(bindir).start()
    try:
        return durability(artifacts, ids, work, "postgresql", pg.url(pg.create_database()), stream_s, streams)
    finally:
        pg.stop()


# ================================================================ 5. security

def security(artifacts: Path, ids: dict, work: Path) -> dict:
    key = "robustness-" + os.urandom(8).hex()
    srv = Served(serve_env(artifacts, work / "security", MIXREC__SERVING__API_KEY=key), work / "security")
    try:
        srv.start()
        spec = httpx.get(f"{srv.url}/docs.json", timeout=30, headers={"Authorization": f"Bearer {key}"}).json()
        leaks = []
        checked = 0
        for path, ops in spec["paths"].items():
            for method in ops:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
                    r = httpx.request(method.upper(), f"{srv.url}{path}", headers=headers, json={}, timeout=30)
                    checked += 1
                    expected_open = path in OPEN_PATHS
                    if (r.status_code == 401) == expected_open:
                        leaks.append(f"{method.upper()} {path} {headers or 'no key'} -> {r.status_code}")
        docs_without_key = httpx.get(f"{srv.url}/docs.json", timeout=30).status_code
        ok_with_key = httpx.post(f"{srv.url}/recommend", json={"user_id": ids["users"][0], "k": 3}, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}).status_code
    finally:
        srv.stop()
    return {"paths": len(spec["paths"]), "requests_checked": checked, "violations": leaks,
            "docs_json_without_key": docs_without_key, "recommend_with_key": ok_with_key,
            "pickle_loaders": pickle_scan()}


def pickle_scan() -> list[str]:
    """Lines in the product that could unpickle: pickle/torch.load without weights_only/allow_pickle=True."""
    hits = []
    for pkg in ("mixrec", "encoders", "fusion", "services", "tools"):
        for f in (ROOT / pkg).rglob("*.py"):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                risky = ("import pickle" in code or "pickle.load" in code or "allow_pickle=True" in code
                         or ("torch.load(" in code and "weights_only=True" not in code))
                if risky:
                    hits.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    return hits


# ================================================================ 6. attacks and the cost of the guards

def _guards_cost_once(artifacts: Path, ids: dict, work: Path, n: int, source: Path) -> dict:
    from attacks import guards_cost

    run = work / f"guards-cost-{time.monotonic_ns()}"
    srv = Served(serve_env(artifacts, run), run, source)
    try:
        ready = srv.start()
        return {**guards_cost(srv.url, ids["users"][0], n=n), "server_ready_s": round(ready, 1)}
    finally:
        srv.stop()


def guards_cost_section(artifacts: Path, ids: dict, work: Path, n: int, baseline: Path | None = None,
                        rounds: int = 2) -> dict:
    """Sequential recommend latency on a fresh server (nothing else running against it).

    With ``baseline`` (a worktree of an older commit) the two are served alternately, ``rounds``
    times each, and the medians and their ratio are reported from that one run."""
    if baseline is None:
        return _guards_cost_once(artifacts, ids, work, n, ROOT)
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    for _ in range(rounds):
        for name, source in (("baseline", baseline), ("current", ROOT)):
            runs[name].append(_guards_cost_once(artifacts, ids, work, n, source))
    med = {k: {q: round(statistics.median(r[q] for r in v), 2) for q in ("p50_ms", "p90_ms", "p99_ms")}
           for k, v in runs.items()}
    rev = subprocess.run(["git", "-C", str(baseline), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {**runs["current"][-1], "baseline_source": str(baseline), "rounds": rounds,
            "baseline_commit": rev.stdout.strip() or None, "runs": runs, "medians": med,
            "p50_ratio": round(med["current"]["p50_ms"] / med["baseline"]["p50_ms"], 3),
            "p99_ratio": round(med["current"]["p99_ms"] / med["baseline"]["p99_ms"], 3)}


PROFILED_SERVICES = ("Recommender", "TextEncoder")  # the entry service and the encoder text queries wait on
PROFILE_RATE = 50  # py-spy samples per second: enough for a 60 s run, light on a 2-core host


def _load_once(artifacts: Path, ids: dict, work: Path, source: Path, duration_s: float, clients: int,
               tag: str, profile_dir: Path | None) -> dict:
    """One fresh server (its own database and state) of ``source``'s code under the mixed load.

    With ``profile_dir``: py-spy samples the Recommender and TextEncoder workers for the whole run
    (every thread, on-CPU stacks only, collapsed) and their top frames are summarised
    (bench/profile_summary.py)."""
    state = work / f"load-{tag}"
    srv = Served(serve_env(artifacts, state), state, source=source)
    spies: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        srv.start()
        for _ in range(20):  # warm caches (metadata, first snapshot) so neither side pays them in the window
            normal_request_ok(srv.url, ids["users"][0])
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            for name in PROFILED_SERVICES:
                raw = profile_dir / f"{tag}-{name}.collapsed"
                spies[name] = (subprocess.Popen(
                    [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(srv.worker_pid(name)),
                     "--threads", "--rate", str(PROFILE_RATE), "--duration", str(int(duration_s) + 2), "--format", "raw",
                     "--output", str(raw), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw)
        out = load(srv, ids, duration_s, clients)
        if spies:
            from profile_summary import summarise

            out["profile"] = {}
            for name, (spy, raw) in spies.items():
                spy.wait(timeout=120)
                out["profile"][name] = summarise(raw, wall_samples=PROFILE_RATE * (int(duration_s) + 2))
        return out
    finally:
        for spy, _ in spies.values():
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        srv.stop()


def load_compare_section(artifacts: Path, ids: dict, work: Path, baseline: Path, duration_s: float, clients: int,
                         rounds: int = 1, profile_dir: Path | None = None) -> dict:
    """The mixed load against ``baseline`` (a worktree of an older commit) and this checkout, served
    alternately on fresh state, ``rounds`` times each, in one run: the before/after of issue 12 part 6."""
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    for r in range(rounds):
        for name, source in (("baseline", baseline), ("current", ROOT)):
            runs[name].append(_load_once(artifacts, ids, work, source, duration_s, clients, f"{name}-{r}",
                                         profile_dir))
            print(f"== load {name} round {r}: " + json.dumps({k: runs[name][-1][k] for k in
                                                               ("throughput_rps", "p50_ms", "p99_ms", "errors")}),
                  flush=True)
    keys = ("throughput_rps", "p50_ms", "p99_ms", "mean_ms")
    med = {k: {q: round(statistics.median(x[q] for x in v), 1) for q in keys} for k, v in runs.items()}
    rev = subprocess.run(["git", "-C", str(baseline), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"baseline_source": str(baseline), "baseline_commit": rev.stdout.strip() or None,
            "duration_s": duration_s, "clients": clients, "rounds": rounds, "runs": runs, "medians": med,
            "ratios": {q: round(med["current"][q] / med["baseline"][q], 3) for q in keys}}


def attack_section(artifacts: Path, ids: dict, work: Path, classes: list[str] | None, workers2: bool,
                   rss_bound_mb: float, keyed_metrics: bool = True) -> dict:
    """Every attack class against one served Recommender (1 worker); lost_writes also against 2 workers,
    metrics_cardinality also against a server with an API key (half the random-path POSTs carry it)."""
    import attacks as atk

    run = atk.new_run_id()
    out: dict = {"rss_bound_mb": rss_bound_mb}

    def ctx_for(env: dict, tag: str) -> dict:
        return {"run": run, "tag": tag, "user": ids["users"][0], "victim_user": ids["users"][1],
                "victim_item": ids["items"][2], "items": ids["items"], "api_key": env.get("MIXREC__SERVING__API_KEY"),
                "db_url": env["MIXREC__STORAGE__URL"], "sync_settle_s": 15.0,
                "max_body_bytes": atk.max_body_bytes_for(Path(env["MIXREC_CONFIG"]))}

    env = serve_env(artifacts, work / "attacks")
    srv = Served(env, work / "attacks")
    try:
        out["server_ready_s"] = round(srv.start(), 1)
        out["classes"] = atk.run_attacks(srv.url, srv.tree.pid, ctx_for(env, "w1"), classes)
        out["normal_request_after"] = normal_request_ok(srv.url, ids["users"][0])
        out["server_log_tracebacks"] = _tracebacks(work / "attacks")
    finally:
        srv.stop()
    if workers2 and (classes is None or "lost_writes" in classes):
        env2 = serve_env(artifacts, work / "attacks-w2", MIXREC__SERVING__WORKERS="2")
        srv2 = Served(env2, work / "attacks-w2")
        try:
            out["workers2_ready_s"] = round(srv2.start(), 1)
            out["workers2"] = atk.run_attacks(srv2.url, srv2.tree.pid, ctx_for(env2, "w2"), ["lost_writes"])
            out["workers2_log_tracebacks"] = _tracebacks(work / "attacks-w2")
        finally:
            srv2.stop()
    if keyed_metrics and (classes is None or "metrics_cardinality" in classes):
        env3 = serve_env(artifacts, work / "attacks-key", MIXREC__SERVING__API_KEY="attacks-" + os.urandom(8).hex())
        srv3 = Served(env3, work / "attacks-key")
        try:
            srv3.start()
            out["with_api_key"] = atk.run_attacks(srv3.url, srv3.tree.pid, ctx_for(env3, "key"),
                                                  ["metrics_cardinality"])
        finally:
            srv3.stop()
    out["summary"] = atk.summarise(attack_rows(out), rss_bound_mb)
    return out


def attack_rows(a: dict) -> dict:
    """Every attack class result of an ``attack_section`` answer, named as in the markdown table."""
    return {**a.get("classes", {}), **{f"{k} (2 workers)": v for k, v in a.get("workers2", {}).items()},
            **{f"{k} (API key set)": v for k, v in a.get("with_api_key", {}).items()}}


def _tracebacks(log_dir: Path) -> int:
    """Tracebacks the server logged (each 5xx logs one; client errors log none)."""
    return sum(f.read_text(errors="replace").count("Traceback (most recent call last)")
               for f in log_dir.glob("serve-*.log"))


# ================================================================ report

def _statuses(examples: list[str]) -> str:
    codes = sorted({e.split()[0] for e in examples if e[:3].isdigit()})
    return f" (HTTP {', '.join(codes)})" if codes else ""


def write_markdown(res: dict) -> None:
    """Render the reliability section of BENCHMARKS.md from ``res``; rows of sections not in ``res`` are left out."""
    lines = [START, "## Reliability (issue 6)", "",
             f"`{res['command']}` — {res['machine']}, {res['date']}. Loopback only; every server is a real "
             "`bentoml serve services.recommender:Recommender` stopped by its own pid.", ""]
    rows = _reliability_rows(res)
    if rows:
        lines += ["| check | result |", "|---|---|", *rows, "",
                  "Figures on a 2-core machine shared with other work; the load and fault runs share the CPU with "
                  "the server. The throwaway PostgreSQL runs with fsync=off (tests/pg_server.py): the kill -9 hits "
                  "the application, not the database. Details: bench/results/reliability.json."]
    if "attacks" in res:
        lines += ([""] if rows else []) + attack_markdown(res["attacks"], res.get("guards_cost"))
    elif "guards_cost" in res:
        lines += ["", _guards_line(res["guards_cost"])]
    lines.append(END)
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"  # re-read: others edit it too
    block = "\n".join(lines)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


def _reliability_rows(res: dict) -> list[str]:
    rows = []
    if "bad_input" in res:
        b = res["bad_input"]
        st = b["schemathesis"]
        rows += [f"| malformed requests (tests/malformed_requests.py, {len(b['apis_covered'])} APIs) | "
                 f"{b['cases'] - len(b['case_failures'])}/{b['cases']} answered the expected 4xx naming the problem |",
                 f"| schemathesis {st['version']} (`not_a_server_error`, --max-examples {res['args']['max_examples']}) | "
                 f"{st['server_error_failures']} server errors, {st['test_cases']} |",
                 f"| normal request after the bad-input run | {'ok' if b['normal_request_after'] else 'FAILED'} |"]
    if "load" in res:
        ld = res["load"]
        rows.append(f"| load: {ld['clients']} clients x {ld['duration_s']} s, mixed workload | {ld['requests']} requests, "
                    f"{ld['errors']} errors{_statuses(ld['error_examples'])}, {ld['throughput_rps']} req/s, p50 {ld['p50_ms']} ms, p99 {ld['p99_ms']} ms |")
    if "encoder_kill" in res:
        fk = res["encoder_kill"]
        rows.append(f"| kill -9 TextEncoder worker during load | {fk['requests_failed']}/{fk['requests']} requests failed "
                    f"({fk['failed_by_api'] or 'none'}); circus restarted the worker (new pid after "
                    f"{fk['worker_process_back_s']} s); text queries completed again {fk['text_queries_back_after_kill_s']} s "
                    f"after the kill (longest stretch without one {fk['text_query_outage_s']} s, slowest request "
                    f"{fk['slowest_request_after_kill_s']} s) |")
    if "restart" in res:
        rs = res["restart"]
        rows.append(f"| whole-server restart (graceful stop, start on the same state) | ready in {rs['ready_s']} s; "
                    f"counts {'identical' if rs['state_intact'] else 'CHANGED'}: "
                    f"{', '.join(f'{k} {v}' for k, v in rs['after'].items())} |")
    for d in res.get("durability", []):
        if "skipped" in d:
            rows.append(f"| kill -9 mid feedback stream ({d['backend']}) | skipped: {d['skipped']} |")
        else:
            rows.append(f"| kill -9 of the whole tree mid feedback stream ({d['backend']}, 4 streams, one event "
                        f"per request) | {d['acknowledged']} acknowledged, **{d['lost']} lost**, "
                        f"{d['stored_after_restart']} stored; restart ready in {d['restart_ready_s']} s |")
    if "security" in res:
        sec = res["security"]
        rows += [f"| API key on: {sec['paths']} paths of /docs.json x (no key, wrong key, key without Bearer) | "
                 f"{len(sec['violations'])} violations ({sec['requests_checked']} requests) |",
                 f"| pickle-capable loaders in mixrec/encoders/fusion/services | {len(sec['pickle_loaders'])} |"]
    return rows


ATTACK_SERVICES = ("Recommender", "TextEncoder", "ImageEncoder", "AudioEncoder")


def _counter(statuses: dict) -> str:
    return ", ".join(f"{k}×{v}" for k, v in statuses.items()) or "-"


def _rss_cell(rss: dict) -> str:
    return " / ".join(f"{rss[s]['delta_mb']:.0f}" if s in rss else "-" for s in ATTACK_SERVICES)


def _guards_line(g: dict) -> str:
    line = (f"Cost of the guards: {g['requests']} sequential `recommend` calls for a known user on one keep-alive "
            f"connection (after {g['warmup']} warm-up calls): p50 {g['p50_ms']} ms, p90 {g['p90_ms']} ms, "
            f"p99 {g['p99_ms']} ms, {g['errors']} errors.")
    if "medians" in g:
        b, c = g["medians"]["baseline"], g["medians"]["current"]
        base = f"commit {g['baseline_commit']}" if g.get("baseline_commit") else f"`{g['baseline_source']}`"
        line += (f" Against {base} (before the guards) served alternately with this checkout, {g['rounds']} servers "
                 f"each, medians: p50 {round(b['p50_ms'], 2)} → {round(c['p50_ms'], 2)} ms (×{g['p50_ratio']}), "
                 f"p99 {round(b['p99_ms'], 2)} → {round(c['p99_ms'], 2)} ms (×{g['p99_ratio']}).")
    return line


def attack_markdown(a: dict, guards: dict | None) -> list[str]:
    """The per-class table of the attack run (bench/attacks.py)."""
    sm = a["summary"]
    every = attack_rows(a)
    lines = ["### Attacks (issue \"Trust\")", "",
             "bench/attacks.py replays each attack class against a served Recommender (1 worker; `lost_writes` "
             "also against `MIXREC__SERVING__WORKERS=2`, `metrics_cardinality` also against a server with an API key). Peak RSS: the summed RSS of each service's workers "
             "sampled every 50 ms during the class, minus its value when the class began. Targets: 0 × 5xx, "
             f"0 lost writes, every service's peak RSS delta under {sm['rss_bound_mb']:.0f} MB per class."
             + (f" Run: `{a['run']['command']}`, {a['run']['date']}, {a['run']['wall_s']:.0f} s; load average "
                f"{'/'.join(map(str, a['run']['loadavg_before']))} before, "
                f"{'/'.join(map(str, a['run']['loadavg_after']))} after (shared 2-core machine)."
                if "run" in a else ""), "",
             "| class | requests | statuses | 5xx | not the expected status | lost | peak RSS Δ MB (Recommender / "
             "TextEncoder / ImageEncoder / AudioEncoder) |", "|---|---|---|---|---|---|---|"]
    for name, c in every.items():
        lines.append(f"| {name} | {c['requests']} | {_counter(c['statuses'])} | {c['5xx']} | {c['unexpected_count']} "
                     f"| {c['lost']} | {_rss_cell(c['rss_mb'])} |")
    lines.append(f"| **all** | {sm['requests']} | | **{sm['5xx']}** | {sm['unexpected']} | **{sm['lost']}** | "
                 f"over {sm['rss_bound_mb']:.0f} MB: {', '.join(sm['classes_over_rss_bound']) or 'none'}; "
                 f"worker restarts {sm['worker_restarts']} |")
    cl = a.get("classes", {})
    notes = []
    for name, m in every.items():
        if name.startswith("metrics_cardinality") and "metrics_bytes_after" in m:
            notes.append(f"/metrics after {m['random_paths']} random-path POSTs"
                         f"{' (API key set, half of them with it)' if m['api_key_configured'] else ''}: "
                         f"{m['metrics_bytes_before'] / 1024:.0f} KB → {m.get('metrics_bytes_half_way', 0) / 1024:.0f} KB "
                         f"after half → {m['metrics_bytes_after'] / 1024:.0f} KB, "
                         f"{m['series_naming_a_random_path']} series naming a random path")
    if "echo" in cl:
        notes.append(f"largest answer to ten unknown 1 MB ids (or 1,000 unknown ids): {cl['echo']['largest_response_bytes']} "
                     "bytes")
    if "streamed_body" in cl and "raw_bytes_sent_before_answer" in cl["streamed_body"]:
        sb = cl["streamed_body"]
        notes.append(f"chunked body of 3 × the {sb['cap_bytes'] / 2**20:.0f} MiB cap: answered after "
                     f"{sb['raw_bytes_sent_before_answer'] / 2**20:.0f} MiB sent")
    if "cross_site" in cl and "state_unchanged" in cl["cross_site"]:
        notes.append(f"cross-site writes: state {'unchanged' if cl['cross_site']['state_unchanged'] else 'CHANGED'}")
    bad = [f"{n}: {u['request']} → {u['status']}" for n, c in every.items() for u in c["unexpected"]][:12]
    if notes:
        lines += ["", "; ".join(notes) + "."]
    if bad:
        lines += ["", "Requests not answered as expected: " + "; ".join(bad) + "."]
    if guards:
        lines += ["", _guards_line(guards)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short load/fuzz/durability runs")
    ap.add_argument("--duration", type=float, default=60.0, help="load test seconds")
    ap.add_argument("--clients", type=int, default=32, help="concurrent load clients")
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/rel-demo"))
    ap.add_argument("--items", type=int, default=120)
    ap.add_argument("--users", type=int, default=150)
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/results or BENCHMARKS.md")
    ap.add_argument("--markdown-only", action="store_true",
                    help="only re-render the BENCHMARKS.md section from bench/results/reliability.json")
    ap.add_argument("--only", default=None,
                    help="comma-separated sections to run alone: attacks (the attack classes and guards_cost), "
                         "guards_cost, load (with --load-baseline: before/after under the mixed load); their "
                         "results are merged into bench/results/reliability.json")
    ap.add_argument("--attack-classes", default=None,
                    help="comma-separated attack classes (default: all of bench/attacks.py CLASSES)")
    ap.add_argument("--skip-attacks", action="store_true", help="full run without the attack classes")
    ap.add_argument("--no-workers2", action="store_true", help="no 2-worker server for the lost_writes class")
    ap.add_argument("--no-keyed-metrics", action="store_true",
                    help="no API-key server for the metrics_cardinality class")
    ap.add_argument("--guards-n", type=int, default=300, help="sequential recommend calls for guards_cost")
    ap.add_argument("--guards-baseline", type=Path, default=None,
                    help="a worktree of an older commit (git worktree add DIR REV): guards_cost serves it and this "
                         "checkout alternately and reports both medians and their ratio")
    ap.add_argument("--load-baseline", type=Path, default=None,
                    help="with --only load: a worktree of an older commit; the mixed load runs against it and this "
                         "checkout alternately (fresh state each) and reports both and their ratio")
    ap.add_argument("--load-rounds", type=int, default=1, help="with --only load: servers of each side")
    ap.add_argument("--profile-dir", type=Path, default=None,
                    help="with --only load: py-spy the Recommender worker during each load run, write the "
                         "collapsed stacks here and summarise the top frames into the results")
    ap.add_argument("--rss-bound-mb", type=float, default=256.0,
                    help="target: per-service peak RSS delta per attack class")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the results of this run here")
    args = ap.parse_args()
    if args.markdown_only:
        write_markdown(json.loads(RESULTS.read_text()))
        return
    if args.only:
        run_only(args)
        return
    if args.quick:
        args.duration = min(args.duration, 10.0)
    max_examples = args.max_examples or (3 if args.quick else 10)
    fuzz_time = 60 if args.quick else 180
    fault_s, stream_s = (10.0, 6.0) if args.quick else (30.0, 15.0)

    artifacts = ensure_demo(args.data_dir, args.items, args.users)
    ids = demo_ids(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="mixrec-robustness-"))
    print(f"work dir {work}", flush=True)
    res: dict = {"command": "python bench/robustness.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                 "args": {"duration": args.duration, "clients": args.clients, "quick": args.quick,
                          "max_examples": max_examples}}
    srv = Served(serve_env(artifacts, work / "main"), work / "main")
    try:
        res["first_start_s"] = round(srv.start(), 1)
        steps = [("bad_input", lambda: bad_input(srv, ids, work, max_examples, fuzz_time)),
                 ("load", lambda: load(srv, ids, args.duration, args.clients)),
                 ("encoder_kill", lambda: encoder_kill(srv, ids, fault_s, min(args.clients, 8), fault_s / 4)),
                 ("restart", lambda: server_restart(srv, ids))]
        for name, step in steps:
            t0 = time.monotonic()
            res[name] = step()
            print(f"== {name} ({time.monotonic() - t0:.0f} s)\n{json.dumps(res[name], indent=1)[:3000]}", flush=True)
    finally:
        srv.stop()
    res["durability"] = [durability(artifacts, ids, work, "sqlite", None, stream_s, 4)]
    if not args.skip_postgres:
        res["durability"].append(durability_postgres(artifacts, ids, work, stream_s, 4))
    print(f"== durability\n{json.dumps(res['durability'], indent=1)}", flush=True)
    res["security"] = security(artifacts, ids, work)
    print(f"== security\n{json.dumps(res['security'], indent=1)}", flush=True)
    if not args.skip_attacks:
        res["guards_cost"] = guards_cost_section(artifacts, ids, work, args.guards_n)
        res["attacks"] = attack_section(artifacts, ids, work, _attack_classes(args), not args.no_workers2,
                                        args.rss_bound_mb, not args.no_keyed_metrics)
        print(f"== attacks\n{json.dumps(res['attacks']['summary'], indent=1)}", flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=2) + "\n")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")
        write_markdown(res)
        print(f"wrote {RESULTS.relative_to(ROOT)} and the reliability section of BENCHMARKS.md")


def _attack_classes(args) -> list[str] | None:
    if not args.attack_classes:
        return None
    from attacks import CLASSES

    names = [n.strip() for n in args.attack_classes.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CLASSES))
    if unknown:
        raise SystemExit(f"unknown attack classes {unknown}; known: {sorted(CLASSES)}")
    return names


def run_only(args) -> None:
    """``--only attacks`` / ``--only guards_cost``: run those alone, merge them into reliability.json."""
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {"attacks", "guards_cost", "load"}
    if unknown:
        raise SystemExit(f"--only takes attacks, guards_cost and/or load, not {sorted(unknown)}")
    if "load" in only and args.load_baseline is None:
        raise SystemExit("--only load compares two checkouts: give --load-baseline DIR (git worktree add DIR REV)")
    artifacts = ensure_demo(args.data_dir, args.items, args.users)
    ids = demo_ids(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="mixrec-robustness-"))
    print(f"work dir {work}", flush=True)
    t0 = time.monotonic()
    load_before = os.getloadavg()
    res: dict = {"command": "python bench/robustness.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    if only & {"attacks", "guards_cost"}:  # guards_cost first: a fresh server, before any attack ran
        res["guards_cost"] = guards_cost_section(artifacts, ids, work, args.guards_n, args.guards_baseline)
        print(f"== guards_cost\n{json.dumps(res['guards_cost'], indent=1)}", flush=True)
    if "load" in only:
        res["load_compare"] = load_compare_section(artifacts, ids, work, args.load_baseline, args.duration,
                                                   args.clients, args.load_rounds, args.profile_dir)
        print(f"== load_compare medians {json.dumps(res['load_compare']['medians'])}", flush=True)
    if "attacks" in only:
        res["attacks"] = attack_section(artifacts, ids, work, _attack_classes(args), not args.no_workers2,
                                        args.rss_bound_mb, not args.no_keyed_metrics)
        print(f"== attacks summary\n{json.dumps(res['attacks']['summary'], indent=1)}", flush=True)
    res["run"] = {"wall_s": round(time.monotonic() - t0, 1), "loadavg_before": [round(x, 2) for x in load_before],
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    print(f"== run {res['run']}", flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=2) + "\n")
    if not args.no_write:
        merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        if "attacks" in res:  # the attack table names the run that produced it
            res["attacks"]["run"] = {**res["run"], "command": res["command"], "date": res["date"]}
        merged.update({k: v for k, v in res.items() if k in ("guards_cost", "attacks", "load_compare")})
        merged.setdefault("command", res["command"])
        merged.setdefault("date", res["date"])
        merged.setdefault("machine", res["machine"])
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
        write_markdown(merged)
        print(f"merged into {RESULTS.relative_to(ROOT)} and re-rendered the reliability section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
