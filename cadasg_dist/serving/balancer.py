"""The front door of ``cadasg serve``: a TCP connection balancer over the replicas' own HTTP ports.

With Ray Serve's direct ingress each replica runs the whole app (keys, limits, versions) on its
own port; nothing then spreads clients over those ports, and Serve's proxy costs a second process
and an actor call per request (at 32 clients it answered a quarter of the requests direct ingress
did, docs/results/serving.md). This balancer listens on the one public port and hands each new
connection to the running replica with the fewest open connections, then copies bytes both ways
without reading HTTP. Replicas answer ``Connection: close`` now and then (``ServeArgs.reconnect_every``),
so long-lived keep-alive clients move to a replica that autoscaling added. A request that a
replica closed on (or died on) before answering a byte goes to another replica (``_Link``).

The targets come from Serve's controller (its running ingress replicas and their ports), read
every ``refresh_s`` in a thread of their own: a replica that stops leaves the list before its port
closes (Serve keeps a stopping replica's port open for its draining period).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Target = tuple[str, int]
CHUNK = 1 << 16
REPLAY_MAX = 1 << 20  # bytes of an unanswered request kept to send again


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
        self.replayed = 0  # requests sent again because their replica closed without answering
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Read the targets once, then listen; raises what binding the port raised (``OSError``)."""
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
        """Stop accepting new connections (and reading the targets: Serve is about to shut down);
        open ones go on."""
        self._stopping.set()
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
        except Exception as exc:  # a busy port, a port out of range: start() raises it
            self._error = exc
            loop.close()
            return
        finally:
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
        link = _Link(client_r, client_w)
        tried: set[Target] = set()
        attempts = 0
        to_replica: asyncio.Future | None = None
        try:
            # a request is sent again to a replica not tried yet, or, once every one was, to any
            # (a lone replica that closed an idle connection just as the client sent on it is alive)
            while (upstream := await self._connect(skip=set() if tried >= set(self.targets) else tried)) is not None:
                attempts += 1
                target, up_r, link.up_w = upstream
                tried.add(target)
                if link.unanswered:  # the last replica closed on a request it never answered
                    self.replayed += 1
                    link.up_w.write(bytes(link.unanswered))
                to_replica = to_replica or asyncio.ensure_future(link.to_replica())
                try:
                    await link.to_client(up_r)  # the replica's side decides when the exchange is over
                finally:
                    self._release(target)
                    link.up_w.close()
                if link.client_gone or not link.unanswered or attempts > len(self.targets):
                    return
        finally:
            if to_replica is not None:
                to_replica.cancel()
            client_w.close()

    def _release(self, target: Target) -> None:
        self.open[target] -= 1
        if not self.open[target] and target not in self.targets:
            del self.open[target]

    async def _connect(self, skip: set[Target]) -> tuple[Target, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for target in self.choose():
            if target in skip:
                continue
            self.open[target] = self.open.get(target, 0) + 1  # counted while connecting: a burst spreads
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*target, limit=CHUNK), self.connect_timeout_s)
            except (TimeoutError, OSError):
                self._release(target)
                continue  # stopping or not yet listening: the next one
            _no_delay(writer)
            return target, reader, writer
        return None


class _Link:
    """One client connection and the replica it is spliced to, which may change.

    ``unanswered`` holds what the client sent since the replica last sent anything (None past
    ``REPLAY_MAX``). If the replica closes or dies while a request has no byte of answer (a replica
    that stops, one that is killed), that request is sent again to another replica (to any, once
    each has been tried: a lone replica that closed an idle connection is alive): sampling has no
    side effects and spends no budget. An answer cut after its first byte is not replayed.
    This assumes one request at a time on a connection, as HTTP/1.1 clients send them: with
    pipelined requests, or a body sent after ``100 Continue``, what is replayed need not be a
    whole request (the next replica then answers 400 or the client sees the connection close).
    """

    def __init__(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.client_r, self.client_w = client_r, client_w
        self.up_w: asyncio.StreamWriter | None = None
        self.unanswered: bytearray | None = bytearray()
        self.client_gone = False

    async def to_replica(self) -> None:
        """Client bytes to whichever replica is current; the client's end of stream passed on (a
        client that has left gets no replay)."""
        while True:
            try:
                data = await self.client_r.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                break
            if self.unanswered is not None:
                self.unanswered += data
                if len(self.unanswered) > REPLAY_MAX:
                    self.unanswered = None
            # a replica that went away: _handle sends ``unanswered`` to the next one (uvloop raises
            # RuntimeError on a closed transport)
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                if not self.up_w.is_closing():
                    self.up_w.write(data)
                    await self.up_w.drain()
        self.client_gone = True
        with contextlib.suppress(OSError, RuntimeError):
            if not self.up_w.is_closing() and self.up_w.can_write_eof():
                self.up_w.write_eof()

    async def to_client(self, up_r: asyncio.StreamReader) -> None:
        """Replica bytes to the client until the replica closes (or the client goes)."""
        while True:
            try:
                data = await up_r.read(CHUNK)
            except (ConnectionError, OSError, RuntimeError):
                return  # a reset replica: like a close
            if not data:
                return
            self.unanswered = bytearray()
            try:
                self.client_w.write(data)
                await self.client_w.drain()
            except (ConnectionError, OSError, RuntimeError):
                self.client_gone = True
                return


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
