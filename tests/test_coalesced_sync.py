"""Writes that commit at the same time share one catch-up of the model (services/coalesced_sync.py).

Before it every feedback call ran its own Replica.sync (a whole-history rebuild of the interaction
matrix) one after another: the load test's tail (issue 12 part 6). The engine test fails on that code
(one sync per write); both check that nobody answers before a sync that saw its commit.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mixrec.catalog import Interaction, read_interactions, read_items
from server_harness import engine_config
from services.coalesced_sync import CoalescedSync
from services.engine import RecommenderEngine

N = 8


def _wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_callers_during_a_run_share_the_next_one_that_starts_after_them():
    release = threading.Event()
    seen: list[int] = []  # the "commits" each run saw
    committed = [0]

    def run():
        saw = committed[0]  # what this run reads from the "database"
        seen.append(saw)
        if len(seen) == 1:
            release.wait(10)  # the first run is slow: everyone else arrives during it
        return saw

    sync = CoalescedSync(run)
    with ThreadPoolExecutor(N + 1) as pool:
        first = pool.submit(sync)
        _wait_for(lambda: len(seen) == 1)
        committed[0] = 1  # committed after the first run began: it must not count for them
        rest = [pool.submit(sync) for _ in range(N)]
        time.sleep(0.05)
        release.set()
        assert first.result(10) == 0
        assert [f.result(10) for f in rest] == [1] * N  # each answered after a run that saw its commit
    assert sync.runs == 2


def test_a_failed_run_raises_in_every_caller_it_covered_and_the_next_call_runs_again():
    calls = [0]

    def run():
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("database gone")
        return "ok"

    sync = CoalescedSync(run)
    with pytest.raises(RuntimeError, match="database gone"):
        sync()
    assert sync() == "ok" and sync.runs == 2


def test_concurrent_feedback_shares_syncs_and_every_event_is_applied(tiny_demo, tmp_path):
    engine = RecommenderEngine.open(engine_config(tiny_demo.artifacts_dir, tmp_path), start_background=False)
    try:
        items = [it.item_id for it in read_items(tiny_demo.data_dir)]
        user = read_interactions(tiny_demo.data_dir)[0].user_id
        real_sync, gate, runs = engine.replica.sync, threading.Event(), []

        def slow_first_sync():
            runs.append(1)
            if len(runs) == 1:
                gate.wait(10)  # the other writes commit while this catch-up is running
            return real_sync()

        engine.replica.sync = slow_first_sync
        stored = len(engine.store.interactions(user_id=user))
        with ThreadPoolExecutor(N) as pool:
            answers = [pool.submit(engine.feedback, [Interaction(user, items[i], "like", 1.0, 1.7e9 + i)])
                       for i in range(N)]
            _wait_for(lambda: len(runs) == 1)
            _wait_for(lambda: len(engine.store.interactions(user_id=user)) == stored + N)  # all committed
            time.sleep(0.1)  # and waiting for a catch-up (the first one is held)
            gate.set()
            out = [a.result(30) for a in answers]
        assert all(o["applied"] for o in out)
        assert len(runs) < N, f"{len(runs)} syncs for {N} concurrent writes: they were not shared"
        snap = engine.model.snapshot
        seen = {snap.item_ids[j] for j in snap.seen_rows(snap.user_index[user])}
        assert set(items[:N]) <= seen  # every acknowledged event reached the model
    finally:
        engine.close()
