"""The connection balancer of ``cadasg serve``, in front of two plain HTTP/1.1 servers on loopback:
bytes pass unchanged both ways, connections go to the replica with the fewest open ones, a replica
that does not listen is skipped, a ``Connection: close`` answer ends the client's connection (its
next one may land elsewhere), a request its replica closed on unanswered goes to another one (an
answer cut after its first byte does not), and stopping frees the port."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from cadasg_dist.serving.balancer import Balancer


class _Replica(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = self.server.name.encode() + b":" + body[::-1]
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        if body == b"bye":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        """Quiet: the tests read the answers, not the server's log."""


class _Quits(socketserver.BaseRequestHandler):
    """Reads one request, then closes: without a byte of answer, or (``cut``) after a few; with
    ``quits`` > 0 only that many connections quit, later ones get a whole answer."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.request.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        while len(body) < length:  # read it all: unread bytes would make the close a reset, which
            body += self.request.recv(4096)  # can discard the partial answer before it is read
        self.server.seen += 1
        if self.server.quits and self.server.seen > self.server.quits:
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        elif self.server.cut:
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")


def _quitting(cut: bool, quits: int = 0) -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Quits)
    server.daemon_threads, server.cut, server.quits, server.seen = True, cut, quits, 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def replicas():
    servers = []
    for name in ("a", "b"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
        server.daemon_threads = True
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _start(targets) -> Balancer:
    balancer = Balancer("127.0.0.1", _free_port(), lambda: list(targets), refresh_s=0.05)
    balancer.start()
    return balancer


def test_connections_spread_over_replicas_and_bytes_pass_unchanged(replicas):
    targets = [("127.0.0.1", s.server_address[1]) for s in replicas]
    balancer = _start(targets)
    url = f"http://127.0.0.1:{balancer.port}/x"
    clients = [httpx.Client() for _ in range(4)]
    try:
        payload = bytes(range(256)) * 300  # larger than one read of the balancer
        names = [c.post(url, content=payload).content.split(b":", 1)[0] for c in clients]
        assert sorted(names) == [b"a", b"a", b"b", b"b"]  # fewest open connections first
        for client, name in zip(clients, names):  # kept alive: the same replica answers again
            answer = client.post(url, content=payload).content
            assert answer == name + b":" + payload[::-1]
        assert sum(balancer.open.values()) == 4
    finally:
        for client in clients:
            client.close()
        balancer.stop(grace_s=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", balancer.port))  # the port is free again


def test_a_replica_that_does_not_listen_is_skipped(replicas):
    dead = ("127.0.0.1", _free_port())
    balancer = _start([dead, ("127.0.0.1", replicas[1].server_address[1])])
    try:
        for _ in range(3):
            with httpx.Client() as client:
                assert client.post(f"http://127.0.0.1:{balancer.port}/", content=b"hi").content == b"b:ih"
    finally:
        balancer.stop(grace_s=2)


def test_connection_close_ends_the_connection_and_the_next_one_is_balanced_again(replicas):
    targets = [("127.0.0.1", replicas[0].server_address[1])]
    balancer = _start(targets)
    url = f"http://127.0.0.1:{balancer.port}/"
    try:
        with httpx.Client() as client:
            assert client.post(url, content=b"one").content == b"a:eno"
            targets.append(("127.0.0.1", replicas[1].server_address[1]))  # autoscaling added a replica
            deadline = time.monotonic() + 5
            while len(balancer.targets) < 2 and time.monotonic() < deadline:  # the next read of the list
                time.sleep(0.01)
            with httpx.Client() as other:  # holds a connection on "b", the least busy
                assert other.post(url, content=b"x").content == b"b:x"
                assert client.post(url, content=b"bye").content == b"a:eyb"  # replica "a" closes
                assert client.post(url, content=b"two").content in (b"a:owt", b"b:owt")  # no error
        with httpx.Client() as client:
            assert client.post(url, content=b"k").status_code == 200
    finally:
        balancer.stop(grace_s=2)


def test_no_replica_closes_the_connection_and_a_busy_port_is_an_error(replicas):
    balancer = _start([])
    try:
        with pytest.raises(httpx.HTTPError), httpx.Client() as client:
            client.post(f"http://127.0.0.1:{balancer.port}/", content=b"x")
        with pytest.raises(OSError):
            Balancer("127.0.0.1", balancer.port, list).start()
    finally:
        balancer.stop(grace_s=2)


def test_a_request_its_replica_closed_on_unanswered_goes_to_another(replicas):
    quits = _quitting(cut=False)
    balancer = _start([("127.0.0.1", quits.server_address[1]), ("127.0.0.1", replicas[0].server_address[1])])
    try:
        for _ in range(4):  # whichever the balancer tries first, the answer comes from "a"
            with httpx.Client() as client:
                assert client.post(f"http://127.0.0.1:{balancer.port}/", content=b"abc").content == b"a:cba"
        assert balancer.replayed >= 1
    finally:
        balancer.stop(grace_s=2)
        quits.shutdown()
        quits.server_close()


def test_an_answer_cut_after_its_first_byte_is_not_sent_again(replicas):
    cut = _quitting(cut=True)
    # the first connection (held open) goes to "a", so the next one goes to the cutting replica, and
    # a replay would have "a" to go to
    balancer = _start([("127.0.0.1", replicas[0].server_address[1]), ("127.0.0.1", cut.server_address[1])])
    try:
        with httpx.Client() as holder:
            assert holder.post(f"http://127.0.0.1:{balancer.port}/", content=b"x").content.startswith(b"a:")
            with pytest.raises(httpx.HTTPError), httpx.Client() as client:
                client.post(f"http://127.0.0.1:{balancer.port}/", content=b"abc")
        assert balancer.replayed == 0
    finally:
        balancer.stop(grace_s=2)
        cut.shutdown()
        cut.server_close()


def test_a_lone_replica_that_closed_on_a_request_gets_it_again_once():
    """One replica (the default's low-load state) that closed a connection just as the request
    arrived (its idle timeout, say) is alive: the request goes to it again, once."""
    lone, never = _quitting(cut=False, quits=1), _quitting(cut=False)  # never: closes on every request
    balancers = [_start([("127.0.0.1", server.server_address[1])]) for server in (lone, never)]
    try:
        with httpx.Client() as client:
            assert client.post(f"http://127.0.0.1:{balancers[0].port}/", content=b"abc").content == b"late"
        assert balancers[0].replayed == 1
        with pytest.raises(httpx.HTTPError), httpx.Client() as client:
            client.post(f"http://127.0.0.1:{balancers[1].port}/", content=b"abc")
        assert never.seen == 2 and balancers[1].replayed == 1  # tried twice, then the client sees the close
    finally:
        for balancer, server in zip(balancers, (lone, never)):
            balancer.stop(grace_s=2)
            server.shutdown()
            server.server_close()
