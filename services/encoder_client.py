"""The Recommender's async client for the three encoder services: one call per modality, modalities at once.

Every request's inputs of one modality travel as ONE list in ONE call (the encoders batch lists
adaptively across callers), and the text, image and audio calls run concurrently with
``asyncio.gather`` (as BentoML's CLIP example fans out). ``add_items`` with N items is therefore
at most three calls, not 3N, and a query with 4 images is one image call.

Inputs are prepared by the caller (decoded within the budgets, re-encoded small); this module
only moves lists and maps failures: overload and dropped connections are retried with backoff,
a read timeout or a 5xx becomes a 503 naming the encoder (``UnavailableError``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np

from mixrec.errors import UnavailableError

MODALITIES = ("text", "image", "audio")

# Backoff before each retry of an encoder call (~3 s in all): rides out adaptive-batching load
# shedding (the encoder answers 503 "process is overloaded") and a dropped keep-alive connection.
ENCODER_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


async def call_encoder(method: Callable[[list], Awaitable[Any]], payload: list, what: str):
    """``await method(payload)``, retried on overload and connection errors; else a 503 naming the encoder.

    BentoML 1.4's dependency client (``RemoteProxy``) is aiohttp; its other clients are httpx. A refused,
    reset or dropped connection is retried (encoding is idempotent) on a new connection, which the address
    in front of the encoder's replicas (a Kubernetes Service) sends to a replica again — another one when
    this one died; a timeout is not retried (the encoder is busy with it) and becomes a 503 at once.
    """
    from services.ops_metrics import encoder_call

    with encoder_call(what):  # latency and failures per modality on /metrics
        return await _call_with_retries(method, payload, what)


async def _call_with_retries(method: Callable[[list], Awaitable[Any]], payload: list, what: str):
    import aiohttp
    import httpx
    from bentoml.exceptions import BentoMLException, ServiceUnavailable

    for delay in (*ENCODER_RETRY_DELAYS_S, None):
        try:
            return await method(payload)
        except (httpx.TimeoutException, asyncio.TimeoutError) as e:  # first: aiohttp's read timeout is a connection error too
            raise UnavailableError(f"the {what} encoder did not answer in time ({type(e).__name__}); retry "
                                   "later") from None
        except (ServiceUnavailable, httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, aiohttp.ClientConnectionError) as e:
            # aiohttp.ClientConnectionError also covers "Connector is closed": BentoML 1.4's dependency
            # client closes its session every 100 requests while concurrent calls may still hold it.
            if delay is None:
                raise UnavailableError(f"the {what} encoder is unavailable (overloaded or restarting), retry "
                                       f"later: {type(e).__name__}") from None
            await asyncio.sleep(delay)
        except BentoMLException as e:
            if int(e.error_code) < 500:
                raise
            raise UnavailableError(f"the {what} encoder failed ({int(e.error_code)}); retry later") from None


class EncoderClient:
    """``encode_all({"text": [...], "image": [b64, ...], "audio": [b64, ...]})`` -> one (n, dim) array each.

    ``services`` maps a modality to a BentoML dependency (anything with ``.to_async.encode(list)``).
    """

    def __init__(self, services: Mapping[str, Any]) -> None:
        self.services = dict(services)

    async def encode(self, modality: str, payload: Sequence[str]) -> np.ndarray:
        """One call for the whole list; rows come back in order (NaN rows for inputs the encoder refused)."""
        out = await call_encoder(self.services[modality].to_async.encode, list(payload), modality)
        return np.array(out, np.float32).reshape(len(payload), -1)

    async def encode_all(self, payloads: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
        """Each non-empty list in one call, all modalities concurrently. Every call is let finish, then the
        first failure is raised (in modality order, so the answer does not depend on timing)."""
        jobs = {m: self.encode(m, p) for m, p in payloads.items() if len(p)}
        done = await asyncio.gather(*jobs.values(), return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException):
                raise result
        return dict(zip(jobs, done))
