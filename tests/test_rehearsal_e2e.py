"""Multi-node rehearsal on one machine: every service of the built Bento its own server process.

What the Kubernetes manifests (deploy/k8s) run, on loopback: from the one tiny Bento the e2e session
builds, each encoder is started alone (``start-http-server --service-name TextEncoder``: what the
Bento's container entrypoint runs for ``args: [start-http-server, ...]``) and each Recommender with
``bentoml serve <bento>`` told where the encoders are. One throwaway PostgreSQL; two TextEncoder replicas behind one address (tests/tcp_round_robin.py,
standing in for a Kubernetes Service), one ImageEncoder, one AudioEncoder; two Recommender replicas
told where the encoders are (``serving.<slot>_encoder.url``), each with its own state directory,
sharing the database, the media directory and the model channel (services/hot_swap.py). A client
alternates between the Recommenders (failing over to the other one, as a load balancer would, while
one is down) and drives a mixed workload: feedback to both, items added and deleted, a user
forgotten, the model updated on one; a TextEncoder replica and then a Recommender replica are
killed with SIGKILL mid-stream, the Recommender restarted. Then both replicas must agree: same
catalogue, same recommendations, erasures visible on both, no acknowledged event lost.

The figures it measured are printed (``pytest -s``) as one ``rehearsal:`` JSON line; BENCHMARKS.md
quotes a run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from mixrec.catalog import read_interactions, read_items
from tools.packaging import OFFLINE_ENV, bentoml_executable
from mixrec.process_tree import ProcessTree, wait_http_ready
from pg_server import postgres_server  # noqa: F401 - fixture
from server_harness import free_port
from tcp_round_robin import RoundRobinProxy

pytestmark = pytest.mark.e2e
SYNC_S = 1.0
READY_S = 300.0
CONVERGE_S = 30.0
NETWORK_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class Node:
    """One service in one ``bentoml serve`` process on a fixed loopback port (kept across restarts)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path, cwd: Path) -> None:
        self.name, self.cmd, self.env, self.log_dir, self.cwd = name, cmd, env, log_dir, cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tree: ProcessTree | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"{self.name}-{self.starts}.log", "wb")
        with log:
            self.tree = ProcessTree([*self.cmd, "--host", "127.0.0.1", "--port", str(self.port)],
                                    env={**os.environ, **OFFLINE_ENV, **self.env}, cwd=self.cwd, output=log)

    def wait_ready(self) -> None:
        log = self.log_dir / f"{self.name}-{self.starts}.log"
        wait_http_ready(self.tree, f"{self.url}/readyz", READY_S, lambda: log.read_text(errors="replace")[-4000:])

    def kill(self) -> None:
        self.tree.kill()

    def stop(self) -> None:
        if self.tree is not None and self.tree.running():
            self.tree.stop(5.0)


class Client:
    """Alternates between the Recommender replicas; fails over to the other one on a network error."""

    def __init__(self, urls: list[str]) -> None:
        self.clients = [httpx.Client(base_url=u, timeout=120) for u in urls]
        self.turn = 0
        self.requests = self.errors = self.failovers = 0
        self.lock = threading.Lock()

    def post(self, path: str, body: dict, replica: int | None = None) -> httpx.Response:
        with self.lock:
            first = self.turn % 2 if replica is None else replica
            self.turn += 1
            self.requests += 1
        for n, i in enumerate((first, 1 - first)):
            try:
                r = self.clients[i].post(path, json=body)
            except NETWORK_ERRORS:
                if n == 1 or replica is not None:
                    with self.lock:
                        self.errors += 1
                    raise
                with self.lock:
                    self.failovers += 1
                continue
            if r.status_code >= 500:
                with self.lock:
                    self.errors += 1
            return r
        raise AssertionError("unreachable")

    def close(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture(scope="module")
def cluster(tiny_demo, postgres_server, tmp_path_factory):  # noqa: F811 - the fixture imported above
    root = tmp_path_factory.mktemp("rehearsal")
    db = postgres_server.create_database()
    logs = root / "logs"
    logs.mkdir()
    bento, env = tiny_demo.bento_tag, tiny_demo.env()  # BENTOML_HOME, the Bento's config and model tags

    def encoder(name: str, service: str) -> Node:
        cmd = [sys.executable, "-m", "bentoml_cli._internal.start", "start-http-server", bento,
               "--service-name", service]
        return Node(name, cmd, env, logs, tiny_demo.data_dir)

    text = [encoder(f"text-{n}", "TextEncoder") for n in "ab"]
    image, audio = encoder("image", "ImageEncoder"), encoder("audio", "AudioEncoder")
    proxy = RoundRobinProxy([("127.0.0.1", t.port) for t in text])

    def rec_env(name: str) -> dict[str, str]:
        return {**env, "MIXREC__SERVING__STATE_DIR": str(root / name / "state"),
                "MIXREC__STORAGE__URL": postgres_server.url(db), "MIXREC__STORAGE__MEDIA_DIR": str(root / "media"),
                "MIXREC__SERVING__MODEL_CHANNEL": str(root / "channel"), "MIXREC__SERVING__UPDATE_EVERY": "0",
                "MIXREC__SERVING__SYNC_INTERVAL_S": str(SYNC_S),
                "MIXREC__SERVING__TEXT_ENCODER__URL": proxy.url, "MIXREC__SERVING__IMAGE_ENCODER__URL": image.url,
                "MIXREC__SERVING__AUDIO_ENCODER__URL": audio.url}

    recs = [Node(f"rec-{n}", [bentoml_executable(), "serve", bento], rec_env(f"rec-{n}"), logs, tiny_demo.data_dir)
            for n in range(2)]
    nodes = [*text, image, audio, *recs]
    t0 = time.monotonic()
    try:
        for node in nodes:  # all at once: both Recommenders bootstrap one empty database concurrently
            node.start()
        for node in nodes:
            node.wait_ready()
        yield {"text": text, "image": image, "audio": audio, "recs": recs, "proxy": proxy, "db_url":
               postgres_server.url(db), "start_s": round(time.monotonic() - t0, 1)}
    finally:
        for node in reversed(nodes):
            node.stop()
        proxy.close()
        postgres_server.drop_database(db)


def _info(url: str) -> dict:
    r = httpx.post(f"{url}/info", json={}, timeout=60)  # it asks every encoder: a dead replica is retried
    assert r.status_code == 200, r.text
    return r.json()


def _state(info: dict) -> tuple:
    m = info["model"]
    return (info["watermarks"], m["items"], m["users"], m["version"], info["catalog"])


def _wait(cond, timeout_s: float = CONVERGE_S, every_s: float = 0.05) -> float:
    """Seconds until ``cond()`` holds (polled); fails after ``timeout_s``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"no convergence within {timeout_s}s")
        time.sleep(every_s)
    return time.monotonic() - t0


def test_two_replicas_converge_through_kills_and_a_model_update(cluster, tiny_demo):
    from mixrec.storage.store import CatalogStore

    recs, text, proxy = cluster["recs"], cluster["text"], cluster["proxy"]
    inter = read_interactions(tiny_demo.data_dir)
    item_ids = [it.item_id for it in read_items(tiny_demo.data_dir)]
    users = [u for u, _ in Counter(i.user_id for i in inter).most_common(4)]
    forgotten = users[3]
    client = Client([r.url for r in recs])
    acked: dict[int, str] = {}  # event id -> user

    def feedback(n: int) -> None:
        user = users[n % 3] if n % 4 else forgotten if n < 8 else users[0]
        r = client.post("/feedback", {"events": [{"user_id": user, "item_id": item_ids[n % len(item_ids)],
                                                  "event": "like"}]})
        assert r.status_code == 200, r.text
        acked.update({i: user for i in r.json()["event_ids"]})

    def item(n: int) -> dict:
        return {"item_id": f"reh-{n}", "type": "product", "title": f"Rehearsal lamp {n}",
                "description": "a brass desk lamp with a warm light", "tags": ["home"]}

    try:
        # 1. Mixed writes on both replicas; convergence time of a write = until the other replica serves it.
        for n in range(12):
            feedback(n)
        converge = []
        for n in range(4):
            writer = n % 2
            assert client.post("/add_items", {"items": [item(n)]}, replica=writer).status_code == 200
            other = recs[1 - writer].url
            converge.append(_wait(lambda: httpx.post(f"{other}/similar_items", json={"item_id": f"reh-{n}", "k": 2},
                                                     timeout=30).status_code == 200))
        assert client.post("/delete_items", {"item_ids": ["reh-0"]}, replica=1).status_code == 200
        assert client.post("/forget_user", {"user_id": forgotten}, replica=0).status_code == 200

        # 2. A TextEncoder replica killed mid-stream: every text-encoding request still succeeds. Four
        # concurrent callers make each Recommender hold several encoder connections; those to the dead
        # replica break, and of the new ones the proxy sends every other one to the dead replica (reset):
        # the Recommender's retry on a new connection is what reaches the live one.
        enc_before = (client.requests, client.errors)
        stop, stream_failed = threading.Event(), []

        def encode_stream(k: int):
            n = 0
            while not stop.is_set():
                r = client.post("/recommend_by_query", {"text": f"warm desk lamp {k} {n}", "k": 3})
                if r.status_code != 200:
                    stream_failed.append(r.text[:200])
                n += 1

        streams = [threading.Thread(target=encode_stream, args=(k,)) for k in range(4)]
        for t in streams:
            t.start()
        time.sleep(2.0)
        before_kill = list(proxy.connections)
        text[1].kill()
        time.sleep(4.0)
        assert client.post("/add_items", {"items": [item(9)]}).status_code == 200  # a write needing the encoder
        stop.set()
        for t in streams:
            t.join()
        assert not stream_failed, stream_failed[:3]
        assert before_kill[1] > 0, "the killed replica never served: the kill tested nothing"
        assert proxy.resets > 0, "no request reached the dead replica: the retry was not exercised"
        encoder_kill = {"requests": client.requests - enc_before[0], "errors": client.errors - enc_before[1],
                        "resets_from_dead_replica": proxy.resets, "connections_per_replica": list(proxy.connections)}

        # 3. The model updated on one replica; the other swaps the published version in.
        up = client.post("/update_model", {"wait": True}, replica=0)
        assert up.status_code == 200, up.text
        swap_s = _wait(lambda: _info(recs[1].url)["model"]["version"] == _info(recs[0].url)["model"]["version"])

        # 4. A Recommender replica killed mid-stream and restarted: it catches up from the database.
        stop.clear()
        counter = iter(range(100, 10_000))

        def feedback_stream():
            while not stop.is_set():
                feedback(next(counter))
                time.sleep(0.02)

        stream = threading.Thread(target=feedback_stream)
        stream.start()
        time.sleep(1.5)
        recs[1].kill()
        time.sleep(1.5)
        t_restart = time.monotonic()
        recs[1].start()
        recs[1].wait_ready()
        ready_s = time.monotonic() - t_restart
        time.sleep(1.0)
        stop.set()
        stream.join()
        catch_up_s = _wait(lambda: _state(_info(recs[1].url)) == _state(_info(recs[0].url))) + ready_s + 1.0

        # 5. Both replicas agree.
        infos = [_info(r.url) for r in recs]
        assert _state(infos[0]) == _state(infos[1])
        for u in users[:3]:
            answers = [httpx.post(f"{r.url}/recommend", json={"user_id": u, "k": 5, "explain": False},
                                  timeout=60).json()["items"] for r in recs]
            assert [a["item_id"] for a in answers[0]] == [a["item_id"] for a in answers[1]], u
            assert [a["score"] for a in answers[0]] == pytest.approx([a["score"] for a in answers[1]], abs=1e-5)
        for r in recs:
            assert httpx.post(f"{r.url}/recommend", json={"user_id": forgotten, "k": 3}).status_code == 404
            assert httpx.post(f"{r.url}/similar_items", json={"item_id": "reh-0", "k": 2}).status_code == 404
            for n in (1, 2, 3, 9):
                assert httpx.post(f"{r.url}/similar_items", json={"item_id": f"reh-{n}", "k": 2}).status_code == 200
        with CatalogStore(cluster["db_url"]) as store:
            stored = {e.id for e in store.interactions(since_id=0)}
        erased_before = {i for i, u in acked.items() if u == forgotten}
        lost = set(acked) - erased_before - stored
        assert not lost, f"acknowledged events lost: {sorted(lost)[:10]}"
        assert all(info["watermarks"]["events"] >= max(acked) for info in infos)
        assert client.errors == 0

        figures = {"start_s": cluster["start_s"], "requests": client.requests, "errors": client.errors,
                   "failovers": client.failovers, "acknowledged_events": len(acked),
                   "convergence_after_write_s": {"median": round(statistics.median(converge), 3),
                                                 "max": round(max(converge), 3), "sync_interval_s": SYNC_S},
                   "swap_after_update_s": round(swap_s, 3), "encoder_kill": encoder_kill,
                   "recommender_restart_ready_s": round(ready_s, 1), "catch_up_after_kill_s": round(catch_up_s, 1)}
        print("rehearsal:", json.dumps(figures))
    finally:
        stop.set()
        client.close()
