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
               wrong key.

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
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import psutil  # noqa: E402

from load_client import run_load  # noqa: E402
from malformed_requests import CASES, check_response  # noqa: E402
from mixrec.packaging import OFFLINE_ENV, bentoml_executable  # noqa: E402
from mixrec.process_tree import ProcessTree, wait_http_ready  # noqa: E402

SERVICE = "services.recommender:Recommender"
RESULTS = ROOT / "bench" / "results" / "reliability.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"
OPEN_PATHS = {"/livez", "/healthz", "/readyz", "/metrics"}
READY_TIMEOUT_S = 240.0


# ================================================================ one served Recommender

class Served:
    """``bentoml serve`` of the Recommender on a fixed state (database, checkpoints, media)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.tree: ProcessTree | None = None
        self.url = ""

    def start(self) -> float:
        from server_harness import free_port

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = self.log_dir / f"serve-{port}.log"
        cmd = [bentoml_executable(), "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)]
        t0 = time.monotonic()
        with open(log, "wb") as out:
            self.tree = ProcessTree(cmd, env={**os.environ, **OFFLINE_ENV, **self.env}, cwd=ROOT, output=out)
        try:
            wait_http_ready(self.tree, f"{self.url}/readyz", READY_TIMEOUT_S,
                            lambda: log.read_text(errors="replace")[-4000:])
        except BaseException:  # not ready (or interrupted): leave nothing running
            self.stop()
            raise
        return time.monotonic() - t0

    def processes(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.tree.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def worker_pid(self, service_name: str) -> int:
        for p in self.processes():
            try:
                if service_name in " ".join(p.cmdline()):
                    return p.pid
            except psutil.NoSuchProcess:
                continue
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
    return {"MIXREC_CONFIG": str(ROOT / "configs" / "offline.yaml"),
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
    for pkg in ("mixrec", "encoders", "fusion", "services"):
        for f in (ROOT / pkg).rglob("*.py"):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                risky = ("import pickle" in code or "pickle.load" in code or "allow_pickle=True" in code
                         or ("torch.load(" in code and "weights_only=True" not in code))
                if risky:
                    hits.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    return hits


# ================================================================ report

def _statuses(examples: list[str]) -> str:
    codes = sorted({e.split()[0] for e in examples if e[:3].isdigit()})
    return f" (HTTP {', '.join(codes)})" if codes else ""


def write_markdown(res: dict) -> None:
    b, ld, fk, rs, sec = res["bad_input"], res["load"], res["encoder_kill"], res["restart"], res["security"]
    st = b["schemathesis"]
    dur = res["durability"]
    lines = [START, "## Reliability (issue 6)", "",
             f"`{res['command']}` — {res['machine']}, {res['date']}. Loopback only; every server is a real "
             "`bentoml serve services.recommender:Recommender` stopped by its own pid.", "",
             "| check | result |", "|---|---|",
             f"| malformed requests (tests/malformed_requests.py, {len(b['apis_covered'])} APIs) | "
             f"{b['cases'] - len(b['case_failures'])}/{b['cases']} answered the expected 4xx naming the problem |",
             f"| schemathesis {st['version']} (`not_a_server_error`, --max-examples {res['args']['max_examples']}) | "
             f"{st['server_error_failures']} server errors, {st['test_cases']} |",
             f"| normal request after the bad-input run | {'ok' if b['normal_request_after'] else 'FAILED'} |",
             f"| load: {ld['clients']} clients x {ld['duration_s']} s, mixed workload | {ld['requests']} requests, "
             f"{ld['errors']} errors{_statuses(ld['error_examples'])}, {ld['throughput_rps']} req/s, p50 {ld['p50_ms']} ms, p99 {ld['p99_ms']} ms |",
             f"| kill -9 TextEncoder worker during load | {fk['requests_failed']}/{fk['requests']} requests failed "
             f"({fk['failed_by_api'] or 'none'}); circus restarted the worker (new pid after "
             f"{fk['worker_process_back_s']} s); text queries completed again {fk['text_queries_back_after_kill_s']} s "
             f"after the kill (longest stretch without one {fk['text_query_outage_s']} s, slowest request "
             f"{fk['slowest_request_after_kill_s']} s) |",
             f"| whole-server restart (graceful stop, start on the same state) | ready in {rs['ready_s']} s; "
             f"counts {'identical' if rs['state_intact'] else 'CHANGED'}: "
             f"{', '.join(f'{k} {v}' for k, v in rs['after'].items())} |"]
    for d in dur:
        if "skipped" in d:
            lines.append(f"| kill -9 mid feedback stream ({d['backend']}) | skipped: {d['skipped']} |")
        else:
            lines.append(f"| kill -9 of the whole tree mid feedback stream ({d['backend']}, 4 streams, one event "
                         f"per request) | {d['acknowledged']} acknowledged, **{d['lost']} lost**, "
                         f"{d['stored_after_restart']} stored; restart ready in {d['restart_ready_s']} s |")
    lines += [f"| API key on: {sec['paths']} paths of /docs.json x (no key, wrong key, key without Bearer) | "
              f"{len(sec['violations'])} violations ({sec['requests_checked']} requests) |",
              f"| pickle-capable loaders in mixrec/encoders/fusion/services | {len(sec['pickle_loaders'])} |", "",
              "Figures on a 2-core machine shared with other work; the load and fault runs share the CPU with "
              "the server. The throwaway PostgreSQL runs with fsync=off (tests/pg_server.py): the kill -9 hits "
              "the application, not the database. Details: bench/results/reliability.json.", END]
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"  # re-read: others edit it too
    block = "\n".join(lines)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


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
    args = ap.parse_args()
    if args.markdown_only:
        write_markdown(json.loads(RESULTS.read_text()))
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
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")
        write_markdown(res)
        print(f"wrote {RESULTS.relative_to(ROOT)} and the reliability section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
