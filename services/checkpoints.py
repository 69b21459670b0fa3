"""Checkpoints of the online model: one atomic pointer, one directory per checkpoint, one writer at a time.

Layout of ``serving.state_dir``::

    checkpoint.json        {"version": 2, "dir": "model-…", "watermarks": {...}, "database_id": "…"}
    model-<time>-<pid>-…/  the HybridModel the pointer names
    .lock                  flock: writers exclusive, readers shared

Several workers (``serving.workers: 2``) share one state directory. A writer holds the exclusive
lock, saves into a fresh directory (``mkdtemp``), swaps the pointer with ``os.replace`` — atomic,
so a reader sees the old checkpoint or the new one, never half of one — and removes the
directories no pointer names (a crashed writer's leftovers included). The model and the watermarks it was saved with
travel in one pointer, so they can never disagree after a crash. The pointer also names the
database it was taken against: a checkpoint from another database (or one whose watermarks are
beyond anything this database ever issued) is ignored, and the service starts from the trained
artifacts and replays the database instead of skipping rows it never saw.

flock works between processes on one host: give each host (replica) its own state directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger("mixrec.checkpoints")
VERSION = 2
POINTER = "checkpoint.json"
PREFIX = "model-"


class CheckpointDir:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as fh:
            fcntl.flock(fh, mode)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def save(self, model, watermarks: dict[str, int], database_id: str | None) -> Path:
        """Write ``model`` and its watermarks as the current checkpoint; returns its directory."""
        with self._locked(fcntl.LOCK_EX):  # one writer at a time, so cleaning up cannot hit a save in flight
            target = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{time.time_ns()}-{os.getpid()}-", dir=self.path))
            try:
                model.save(target)
                pointer = {"version": VERSION, "dir": target.name, "watermarks": dict(watermarks),
                           "database_id": database_id, "saved_at": time.time()}
                fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".json", dir=self.path)
                with os.fdopen(fd, "w") as f:
                    json.dump(pointer, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path / POINTER)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            self._remove_unreferenced(keep=target.name)
        return target

    def _remove_unreferenced(self, keep: str) -> None:
        for p in self.path.iterdir():
            if p.name.startswith(PREFIX) and p.name != keep:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            elif p.name.startswith(".checkpoint-"):  # a pointer a crashed writer left behind
                p.unlink(missing_ok=True)
        for legacy in ("model", "model.tmp", "model.old", "watermarks.json", "watermarks.json.tmp"):  # version 1
            p = self.path / legacy
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink(missing_ok=True)

    def current(self) -> str | None:
        """The directory the pointer names now (None: no checkpoint yet). No lock: the pointer is
        replaced atomically, so this reads the old name or the new one."""
        pointer = self._read_pointer()
        return None if pointer is None else pointer["dir"]

    def load(self, database_id: str | None, high_water_marks: dict[str, int]):
        """``(model, watermarks)`` of the current checkpoint when it belongs to this database, else None."""
        found = self.load_named(database_id, high_water_marks)
        return None if found is None else found[:2]

    def load_named(self, database_id: str | None, high_water_marks: dict[str, int]):
        """``(model, watermarks, directory name)``, or None as ``load``."""
        from fusion.hybrid import HybridModel

        with self._locked(fcntl.LOCK_SH):
            pointer = self._read_pointer()
            if pointer is None:
                return None
            marks = {k: int(v) for k, v in pointer.get("watermarks", {}).items()}
            why = _mismatch(pointer, marks, database_id, high_water_marks)
            if why:
                log.warning("ignoring checkpoint in %s: %s; starting from the trained artifacts and replaying the "
                            "database", self.path, why)
                return None
            try:
                model = HybridModel.load(self.path / pointer["dir"])
            except Exception as e:  # e.g. files lost to a power cut after the pointer was written
                log.warning("ignoring unreadable checkpoint %s (%s: %s); starting from the trained artifacts and "
                            "replaying the database", pointer["dir"], type(e).__name__, e)
                return None
        log.info("loaded checkpoint %s (watermarks %s)", pointer["dir"], marks)
        return model, marks, pointer["dir"]

    def _read_pointer(self) -> dict | None:
        current = self.path / POINTER
        if current.exists():
            return json.loads(current.read_text())
        legacy = self.path / "watermarks.json"
        if legacy.exists() and (self.path / "model").is_dir():  # version 1: model/ + watermarks.json
            marks = json.loads(legacy.read_text())
            return {"version": 1, "dir": "model", "database_id": None,
                    "watermarks": {k: marks.get(k, 0) for k in ("events", "changes", "forgotten")}}
        return None


def _mismatch(pointer: dict, marks: dict[str, int], database_id: str | None,
              high_water_marks: dict[str, int]) -> str | None:
    saved = pointer.get("database_id")
    if saved is not None and database_id is not None and saved != database_id:
        return f"it was taken against database {saved}, this is {database_id}"
    # "trained_events" (what the last fit_partial covered) is a mark in the events log.
    log_of = {"trained_events": "events"}
    beyond = {k: (v, high_water_marks.get(log_of.get(k, k), 0)) for k, v in marks.items()
              if v > high_water_marks.get(log_of.get(k, k), 0)}
    if beyond:
        return f"its watermarks are beyond anything this database issued: {beyond}"
    return None
