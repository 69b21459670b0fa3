"""What the replica tells an observer (services/ops_metrics.py exports it as metrics).

Its own module so that ops_metrics, which ``operate.install`` imports when the service module is
imported, does not import the replica and with it the model stack (fusion, LightFM, scikit-learn,
SQLAlchemy): BentoML imports the entry service's module in every worker, the encoder workers
included, and those never hold a model.
"""

from __future__ import annotations


class ReplicaObserver:
    """Told how model updates, checkpoints and accepted feedback went; services/ops_metrics.py exports
    them as metrics. This base records nothing."""

    def updated(self, seconds: float, ok: bool, events_trained: int) -> None: ...

    def checkpointed(self, seconds: float, ok: bool) -> None: ...

    def accepted(self, events: int) -> None: ...
