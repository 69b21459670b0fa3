"""RecallSampler: the ANN path's recall, measured on live searches, off the request path.

A request that searched an index offers its answer (``offer``: a counter and, for one search
in ``every``, a queue put); a daemon thread re-runs the sampled search exactly over the same
index and filter and keeps the recall of the last ``window`` samples. A full queue drops the
sample: measuring never slows or blocks a request.

Recall here is recall@``at`` (10) of the candidate search itself: of the exact top-10 for the same
query and filter, the share the ANN answer's own top-10 holds (both are sorted best first), before
the exact re-scoring and ranking the candidates go through.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque

import numpy as np

log = logging.getLogger("mixrec.ann_recall")


class RecallSampler:
    def __init__(self, every: int = 50, window: int = 500, queue_size: int = 8, at: int = 10) -> None:
        if every < 1 or window < 1 or at < 1:
            raise ValueError("every, window and at must be >= 1")
        self.every, self.window, self.at = every, window, at
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._recalls: deque[float] = deque(maxlen=window)
        self._offered = 0
        self.measured = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def offer(self, index, query: np.ndarray, k: int, allowed_mask: np.ndarray | None, found: np.ndarray) -> None:
        """One search's answer; every ``every``-th is queued for an exact re-run."""
        with self._lock:
            self._offered += 1
            if self._offered % self.every:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mixrec-ann-recall", daemon=True)
                self._thread.start()
        mask = None if allowed_mask is None else np.array(allowed_mask, bool)  # the caller's may change later
        try:
            self._queue.put_nowait((index, np.array(query, np.float32), int(k), mask, np.array(found)))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            index, q, k, mask, found = self._queue.get()
            try:
                exact, _ = index.search_exact(q, min(k, self.at), mask)
                if exact.size:
                    hits = np.intersect1d(found[:self.at], exact, assume_unique=True).size
                    with self._lock:
                        self._recalls.append(hits / exact.size)
                        self.measured += 1
            except Exception:  # a sample is not worth a crash of the thread
                log.exception("measuring ANN recall failed")
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Wait until every queued sample was measured (tests, benchmarks)."""
        self._queue.join()

    def describe(self) -> dict:
        with self._lock:
            recall = float(np.mean(self._recalls)) if self._recalls else None
            return {"recall_samples": self.measured, "recall": None if recall is None else round(recall, 4),
                    "recall_dropped": self.dropped}
