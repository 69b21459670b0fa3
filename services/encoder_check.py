"""The Recommender's start-up check: do the served encoders match the ones the model was trained with?

At start the Recommender asks each encoder service for its fingerprint (``fingerprint`` API,
encoders/fingerprint.py) and compares it with the fingerprints the trained artifacts recorded.
Until that comparison has passed the Recommender is not ready; when it fails it never becomes
ready (``/readyz`` stays 503), logs one message naming both sides and the fix, and answers every
API call with that message as a 503 — instead of serving 400s or silently wrong results.

The check runs in the background from start-up (retrying while encoder services come up), and
again inline before any request if it has not finished yet, so no request is served and no write
committed before the encoders were compared.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping

from encoders.errors import EncoderMismatchError
from encoders.fingerprint import check_same

log = logging.getLogger("mixrec.encoder_check")
RETRY_DELAYS_S = (0.5, 1, 2, 4, 5)  # then every 5 s until the encoder services answer

FIX = ("Fix: serve the encoders the artifacts were trained with (the Bento built by `mixrec build --config "
       "<the training config>` pins them), or re-encode and retrain with the served encoders "
       "(`mixrec encode` + `mixrec train` with the same config) and rebuild.")

Fetch = Callable[[], Awaitable[dict]]


class EncoderCheck:
    """State: ``pending`` -> ``ok`` | ``refused`` (final)."""

    def __init__(self, trained: Mapping[str, dict], artifacts: str) -> None:
        self.trained = {m: dict(d) for m, d in trained.items() if d}
        self.artifacts = artifacts
        self.state = "pending"
        self.message = ""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    async def run_once(self, fetchers: Mapping[str, Fetch]) -> str:
        """Fetch the served fingerprints and compare (once); returns the state. Connection failures leave it pending."""
        async with self._lock:
            if self.state != "pending":
                return self.state
            slots = [m for m in fetchers if m in self.trained]
            served = dict(zip(slots, await asyncio.gather(*(fetchers[m]() for m in slots))))
            try:
                check_same(served, self.trained, have_name="the served encoder services",
                           want_name=f"the trained artifacts ({self.artifacts})", fix=FIX, slots=slots)
            except EncoderMismatchError as e:
                self.state, self.message = "refused", f"the Recommender refuses to start: {e}"
                log.error("%s", self.message)
            else:
                self.state = "ok"
                log.info("served encoders match the trained artifacts (%s)",
                         ", ".join(f"{m} {served[m].get('digest')}" for m in slots))
            return self.state

    async def settle(self, fetchers: Mapping[str, Fetch]) -> str:
        """Retry ``run_once`` until the encoder services answer."""
        delays = iter(RETRY_DELAYS_S)
        while self.state == "pending":
            try:
                await self.run_once(fetchers)
            except Exception as e:  # noqa: BLE001 - encoder services still starting: try again
                delay = next(delays, RETRY_DELAYS_S[-1])
                log.info("encoder fingerprints not available yet (%s: %s); retrying in %ss", type(e).__name__, e, delay)
                await asyncio.sleep(delay)
        return self.state

    def start(self, fetchers: Mapping[str, Fetch]) -> None:
        if self._task is None and self.state == "pending":
            self._task = asyncio.get_running_loop().create_task(self.settle(fetchers))

    async def ready(self, fetchers: Mapping[str, Fetch]) -> bool:
        self.start(fetchers)
        if self.state == "pending":
            try:
                await asyncio.wait_for(self.run_once(fetchers), timeout=10)
            except Exception:  # noqa: BLE001 - not yet: the background task keeps trying
                return False
        return self.state == "ok"

    async def guard(self, fetchers: Mapping[str, Fetch]) -> None:
        """Before serving a request: compare now if not done yet; raise the refusal (503) if refused."""
        if self.state == "pending":
            try:
                await self.run_once(fetchers)
            except Exception:  # noqa: BLE001 - encoders unreachable: the request's own call will say so
                pass
        if self.state == "refused":
            raise EncoderMismatchError(self.message)


def fetchers_for(service: Any) -> dict[str, Fetch]:
    """The Recommender's three encoder dependencies' ``fingerprint`` calls."""
    return {m: getattr(service, f"{m}_encoder").to_async.fingerprint for m in ("text", "image", "audio")}


def for_service(service: Any) -> EncoderCheck:
    """The check for a Recommender whose engine has loaded its model."""
    return EncoderCheck(service.engine.model.space.encoders, str(service.cfg.serving.artifacts))


async def ready(service: Any) -> bool:
    """The Recommender's readiness hook."""
    return await service.encoder_check.ready(fetchers_for(service))


async def guard(service: Any) -> None:
    """The Recommender's per-request hook (anything without a check, e.g. a test double, passes)."""
    check = getattr(service, "encoder_check", None)
    if check is not None:
        await check.guard(fetchers_for(service))
