"""Hot swap of model versions across Recommender replicas, through a shared model channel.

``serving.model_channel`` names a directory every replica mounts (the shared volume that holds the
media store). It is a ``CheckpointDir`` — one directory per version, one atomically replaced pointer,
flock between writers and readers — so a reader sees a whole version or the one before, never half:

  * publish: the replica that ran ``update_model`` (or the job that asked one to) saves its model and
    the database watermarks it covers as a new version, right after its own checkpoint;
  * follow: every replica reads the pointer once per sync round; when it names a version the replica
    does not hold, the replica loads it beside the serving model, replays the database rows committed
    after the version's watermarks into it (items, events, erasures: the database is the source of
    truth) and swaps it in under the sync lock (``Replica.adopt``). Requests in flight finish
    on the model they started with, later ones get the new one: no request is dropped or refused.

A replica that starts (or restarts) begins from the newest published version when there is one, so a
new pod holds the same model as the others after replaying the same rows.

flock works across hosts on NFSv4 / CephFS / EFS (Linux maps it to POSIX byte-range locks on NFS);
the channel is written once per model update, never per request.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from services.checkpoints import CheckpointDir

if TYPE_CHECKING:
    from fusion.hybrid import HybridModel
    from mixrec.config import MixrecConfig
    from mixrec.storage.store import CatalogStore


class Replica(Protocol):
    """What the channel needs of the replica it serves (services/replica.py ``Replica``; a Protocol so
    the replica, which opens the channel, is not imported back)."""

    store: "CatalogStore"
    model_version: str | None

    def checkpoint(self, into: CheckpointDir | None = None) -> Path: ...

    def update_running(self) -> bool: ...

    def adopt(self, model: "HybridModel", watermarks: dict[str, int]) -> None: ...

log = logging.getLogger("mixrec.hot_swap")


class ModelChannel:
    """The shared directory of published model versions, as seen by one replica."""

    def __init__(self, path: str | Path) -> None:
        self.versions = CheckpointDir(path)
        self.engine: Replica | None = None
        self.held: str | None = None  # the version this replica serves (None: its own, never published)
        self.swaps = 0
        self.publishes = 0
        self.failures = 0
        self._unpublished = False

    @classmethod
    def from_config(cls, cfg: "MixrecConfig") -> "ModelChannel | None":
        return cls(cfg.serving.model_channel) if cfg.serving.model_channel else None

    def load_latest(self, store: "CatalogStore"):
        """``(model, watermarks)`` of the newest version taken against ``store``'s database, else None."""
        found = self.versions.load_named(store.database_id, store.high_water_marks())
        if found is None:
            return None
        model, marks, self.held = found
        log.info("starting from published model version %s", self.held)
        return model, marks

    def attach(self, engine: "Replica") -> None:
        self.engine = engine
        engine.model_version = self.held

    def publish(self) -> bool:
        """Save the engine's model + watermarks as the newest version (after a model update). A failure is
        logged and the next ``follow`` retries it: the update itself stands on this replica."""
        assert self.engine is not None
        try:
            saved = self.engine.checkpoint(into=self.versions)
        except Exception:
            self.failures += 1
            self._unpublished = True
            log.exception("publishing the updated model to %s failed; retrying next round", self.versions.path)
            return False
        self._unpublished = False
        self.held = self.engine.model_version = saved.name
        self.publishes += 1
        log.info("published model version %s", saved.name)
        return True

    def follow(self) -> bool:
        """Swap in the newest version when it is not the one served; True when a swap happened."""
        engine = self.engine
        assert engine is not None
        if self._unpublished:  # this replica's own update is the newest model: publish it first
            self.publish()
            return False
        latest = self.versions.current()
        if latest is None or latest == self.held or engine.update_running():
            return False  # nothing new, or this replica is training (it publishes when done)
        found = self.versions.load_named(engine.store.database_id, engine.store.high_water_marks())
        if found is None:
            return False
        model, marks, name = found
        engine.adopt(model, marks)
        self.held = engine.model_version = name
        self.swaps += 1
        log.info("swapped in published model version %s", name)
        return True

    def status(self) -> dict:
        return {"version": self.held, "swaps": self.swaps, "publishes": self.publishes, "failures": self.failures}
