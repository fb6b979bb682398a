"""The front door of ``cadasg serve``: a TCP connection balancer over the replicas' own HTTP ports.

With Ray Serve's direct ingress each replica runs the whole app (keys, limits, versions) on its
own port; nothing then spreads clients over those ports, and Serve's proxy costs a second process
and an actor call per request (at 32 clients it answered a quarter of the requests direct ingress
did, docs/results/serving.md). This balancer listens on the one public port and hands each new
connection to the running replica with the fewest open connections, then copies bytes both ways
without reading HTTP. Replicas answer ``Connection: close`` now and then (``ServeArgs.reconnect_every``),
so long-lived keep-alive clients move to a replica that autoscaling added.

The targets come from Serve's controller (its running ingress replicas and their ports), read
every ``refresh_s`` in a thread of their own: a replica that stops leaves the list before its port
closes (Serve keeps a stopping replica's port open for its draining period).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Target = tuple[str, int]
CHUNK = 1 << 16


class Balancer:
    """Accept on ``host:port``; splice each connection to one of ``targets()``.

    ``targets`` is called from a background thread every ``refresh_s`` seconds; an exception keeps
    the previous list. ``start`` returns once the port listens; ``stop`` closes it and waits up to
    ``grace_s`` for open connections to end.
    """

    def __init__(self, host: str, port: int, targets: Callable[[], list[Target]], *,
                 refresh_s: float = 0.5, connect_timeout_s: float = 2.0) -> None:
        self.host, self.port = host, port
        self._read_targets, self.refresh_s, self.connect_timeout_s = targets, refresh_s, connect_timeout_s
        self.targets: list[Target] = []
        self.open: dict[Target, int] = {}
        self._turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Read the targets once, then listen; raises ``OSError`` if the port cannot be bound."""
        self._refresh()
        self._threads = [threading.Thread(target=self._serve, name="cadasg-balancer", daemon=True),
                         threading.Thread(target=self._poll, name="cadasg-balancer-targets", daemon=True)]
        for thread in self._threads:
            thread.start()
        self._ready.wait()
        if self._error is not None:
            self._stopping.set()
            raise self._error

    def close(self) -> None:
        """Stop accepting new connections; open ones go on."""
        if self._loop is not None and self._server is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._server.close)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, give open connections ``grace_s`` to end, then close them."""
        self._stopping.set()
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(grace_s), self._loop).result(grace_s + 5)
        for thread in self._threads:
            thread.join(timeout=grace_s + 5)

    # -- targets -----------------------------------------------------------------------------
    def _refresh(self) -> None:
        try:
            targets = list(self._read_targets())
        except Exception as exc:  # a controller restart: keep the last list
            log.warning("could not read the replicas' ports: %s", exc)
            return
        self.targets = targets

    def _poll(self) -> None:
        while not self._stopping.wait(self.refresh_s):
            self._refresh()

    def choose(self) -> list[Target]:
        """Targets in the order to try: fewest open connections first, ties taken in turn."""
        targets = self.targets
        if not targets:
            return []
        turn = next(self._turn) % len(targets)
        rotated = targets[turn:] + targets[:turn]
        return sorted(rotated, key=lambda t: self.open.get(t, 0))

    # -- the event loop ----------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            import uvloop  # uvicorn's own loop where installed: about half the CPU a connection
            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._handle, self.host, self.port, reuse_address=True, backlog=1024, limit=CHUNK))
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self, grace_s: float) -> None:
        assert self._server is not None
        self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(self.open.values()) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in asyncio.all_tasks(loop) - {asyncio.current_task()}:
            task.cancel()
        loop.call_soon(loop.stop)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        _no_delay(client_w)
        upstream = await self._connect()
        if upstream is None:
            client_w.close()
            return
        target, up_r, up_w = upstream
        self.open[target] = self.open.get(target, 0) + 1
        to_replica = asyncio.ensure_future(_pipe(client_r, up_w))
        try:
            await _pipe(up_r, client_w)  # the replica's side decides when the exchange is over
        finally:
            to_replica.cancel()
            self.open[target] -= 1
            if not self.open[target] and target not in self.targets:
                del self.open[target]
            for writer in (client_w, up_w):
                writer.close()

    async def _connect(self) -> tuple[Target, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for target in self.choose():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*target, limit=CHUNK), self.connect_timeout_s)
            except (TimeoutError, OSError):
                continue  # stopping or not yet listening: the next one
            _no_delay(writer)
            return target, reader, writer
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the half-close on; a reset ends both directions."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve_targets(app_name: str, host: str | None = None) -> Callable[[], list[Target]]:
    """The running ingress replicas of Serve application ``app_name`` as (address, port) pairs, read
    from Serve's controller (the list it publishes for external load balancers; while no replica
    runs, Serve's own proxy). ``host`` replaces the node's address: replicas of a single-node
    ``cadasg serve`` listen on loopback only."""
    from ray.serve.context import _get_global_client

    def read() -> list[Target]:
        details = _get_global_client().get_serve_details()
        return [(host or t["ip"], int(t["port"])) for group in details.get("target_groups", [])
                if group.get("protocol") == "HTTP" and group.get("app_name") in (app_name, "")
                for t in group["targets"]]

    return read
