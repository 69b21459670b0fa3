"""Group commit for the replica's catch-up: concurrent writes share one ``sync`` instead of queueing one each.

Every write (feedback, add/delete items, forget) commits to the database and then must not answer
before the model has applied it: before, each one ran its own ``Replica.sync`` behind the sync lock,
and each sync rebuilds the interaction matrix over every stored event (fusion/hybrid.py). Under a
burst of 30 feedback requests a second that was a queue of whole-history rebuilds holding the GIL,
which starved the event loop and every other request (issue 12 part 6, BENCHMARKS.md).

``CoalescedSync(fn)()`` returns only after a run of ``fn`` that *started after the call*, so it saw
every row the caller committed before calling; callers arriving while a run is in progress wait and
share the next run. A burst of N writes costs at most two runs, not N. A failed run raises in every
caller it covered (each then answers ``applied: false``; the background sync retries).
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class CoalescedSync(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._cond = threading.Condition()
        self._started = 0  # runs started so far (run n is the n-th)
        self._finished = 0  # the newest finished run
        self._running = False
        self._last: tuple[T | None, BaseException | None] = (None, None)  # that run's result or error
        self.runs = 0  # how many times fn ran (for tests and metrics)

    def __call__(self) -> T:
        with self._cond:
            # A run in progress started before this call: only the next one to start covers it.
            need = self._started + 1
            while self._finished < need and self._running:
                self._cond.wait()
            if self._finished >= need:  # someone else's run (started after this call) covered it
                return self._outcome(*self._last)
            self._running = True
            self._started += 1
            mine = self._started
        result, error = None, None
        try:
            result = self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to every caller this run covered
            error = e
        with self._cond:
            self.runs += 1
            self._running = False
            self._finished = mine
            self._last = (result, error)
            self._cond.notify_all()
        return self._outcome(result, error)

    @staticmethod
    def _outcome(result: T | None, error: BaseException | None) -> T:
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
