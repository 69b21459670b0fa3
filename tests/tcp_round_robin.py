"""One loopback address in front of several replicas, as a Kubernetes Service's kube-proxy is.

Each new TCP connection goes to the next backend in turn; there are no health checks and no
retries here — a connection sent to a dead replica is reset, as a DNAT'ed connection to a dead pod
is — so whatever rides out a dead replica is the caller's own retry (the Recommender's encoder
client), which is what the rehearsal tests. (haproxy or nginx would health-check and retry by
themselves and hide exactly that; and they would need installing.) Runs in a daemon thread.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading


class RoundRobinProxy:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self._next = itertools.cycle(range(len(self.backends)))
        self.connections = [0] * len(self.backends)
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True, name="rr-proxy")
        self._thread.start()
        started.wait(10)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        started.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = next(self._next)
        self.connections[n] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.backends[n])
        except OSError:
            self._reset(writer)
            return
        # Whichever side ends first ends both: a backend that died mid-request closes (or resets) the
        # caller's connection at once, as it would without the proxy.
        to_backend = asyncio.ensure_future(_pipe(reader, up_writer))
        to_caller = asyncio.ensure_future(_pipe(up_reader, writer))
        done, pending = await asyncio.wait({to_backend, to_caller}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if to_caller in done and not to_caller.result():
            self._reset(writer)
        else:
            writer.close()
        up_writer.close()

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        """Close with RST (SO_LINGER 0), as the kernel answers for a process that died."""
        self.resets += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    def close(self) -> None:
        def stop() -> None:
            self._server.close()
            self._loop.stop()
        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until EOF; False when either side broke."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        return True
    except (ConnectionError, OSError):
        return False
