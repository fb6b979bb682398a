"""The real Serve application over HTTP on localhost: routes, merged batches, and a version swap
under concurrent requests with no failed request. One deployment for the module (~30-40 s on
2 cores, most of it Serve starting); it uses the session's Ray and a free port, never 8000."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections import Counter

import httpx
import pandas as pd
import pytest

from cadasg_dist.serving.auth import hash_key
from cadasg_dist.serving.formats import read_arrow
from cadasg_dist.serving.settings import ServeArgs, VersionConfig

pytestmark = pytest.mark.integration
KEY = "integration-key-93b1"
HEADERS = {"X-API-Key": KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_session, tiny_model, tmp_path_factory):
    from ray import serve

    from cadasg_dist.serving.app import bind

    root = tmp_path_factory.mktemp("serve")
    first = str(tiny_model.save(root / "tiny"))
    second = str(tiny_model.save(root / "tiny-v2"))  # same weights, another directory and label
    os.environ["CADASG_TEST_KEYS"] = f"{hash_key(KEY)} model=tiny"
    args = ServeArgs(model_dir=first, model_name="tiny", keys_env="CADASG_TEST_KEYS", min_replicas=1,
                     max_replicas=1, num_cpus=0.5, max_rows=5_000, chunk_rows=1_000, batch_wait_timeout_s=0.02)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(bind(args), name="cadasg-test", route_prefix="/")
    yield {"url": f"http://127.0.0.1:{port}", "args": args, "second": second, "bind": bind}
    serve.shutdown()
    os.environ.pop("CADASG_TEST_KEYS", None)


def test_routes_over_http(served, tiny_model):
    with httpx.Client(base_url=served["url"], timeout=60) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/v1/model").status_code == 401
        info = c.get("/v1/model", headers=HEADERS).json()
        assert info["name"] == "tiny" and info["contexts"]["columns"] == ["group"]
        r = c.post("/v1/sample", headers=HEADERS, json={"n": 3_000, "context": {"group": "b"}, "seed": 8,
                                                          "format": "arrow"})  # streamed: 3 chunks
        assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.arrow.stream"
        pd.testing.assert_frame_equal(read_arrow(r.content), tiny_model.sample(3_000, context={"group": "b"}, seed=8),
                                      check_dtype=False)
        bad = c.post("/v1/sample", headers=HEADERS, json={"n": 5, "context": {"group": "zzz"}})
        assert bad.status_code == 422 and bad.json()["valid"]["group"]
        assert c.post("/v1/sample", headers=HEADERS, content=b"{oops").status_code == 400


def test_concurrent_small_requests_share_passes_and_keep_their_rows(served, tiny_model):
    async def burst():
        async with httpx.AsyncClient(base_url=served["url"], timeout=60) as c:
            return await asyncio.gather(*[
                c.post("/v1/sample", headers=HEADERS, json={"n": 20, "seed": i, "format": "arrow"})
                for i in range(24)])

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert max(int(r.headers["X-Batch-Requests"]) for r in responses) > 1
    for i, r in enumerate(responses):
        pd.testing.assert_frame_equal(read_arrow(r.content), tiny_model.sample(20, seed=i), check_dtype=False)


def test_version_swap_under_load_drops_no_request(served):
    from ray import serve

    stop, lock = threading.Event(), threading.Lock()
    statuses: Counter = Counter()
    versions: Counter = Counter()

    def client(worker: int) -> None:
        with httpx.Client(base_url=served["url"], timeout=60) as c:
            i = 0
            while not stop.is_set():
                try:
                    r = c.post("/v1/sample", headers=HEADERS, json={"n": 50, "seed": worker * 10_000 + i})
                    outcome, version = r.status_code, r.headers.get("X-Model-Version")
                except httpx.HTTPError as exc:
                    outcome, version = type(exc).__name__, None
                with lock:
                    statuses[outcome] += 1
                    versions[version] += 1
                i += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    serve.run(served["bind"](served["args"], VersionConfig(model_dir=served["second"], version="v2")),
              name="cadasg-test", route_prefix="/")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert set(statuses) == {200}, statuses
    assert versions["v2"] > 0 and len(versions) == 2, versions
    with httpx.Client(base_url=served["url"], timeout=60) as c:
        assert c.get("/v1/model", headers=HEADERS).json()["version"] == "v2"


def _raw_post(url: str, head: str, body_parts, *, timeout: float = 20.0) -> str:
    """Send a POST by hand (headers, then body parts as long as the server keeps reading) and return
    the status line of the answer: how a client that lies about or streams its body is seen."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(head.encode())
        conn.settimeout(0.05)
        answer = b""
        for part in body_parts:
            try:
                answer += conn.recv(4096)
            except (TimeoutError, BlockingIOError):
                pass
            if answer:
                break
            try:
                conn.sendall(part)
            except OSError:  # the server answered and closed: what a cap does
                break
        conn.settimeout(timeout)
        while b"\r\n" not in answer:
            more = conn.recv(4096)
            if not more:
                break
            answer += more
    return answer.split(b"\r\n", 1)[0].decode()


def test_oversized_bodies_are_refused_before_they_are_read(served):
    limit = served["args"].max_body_bytes
    head = (f"POST /v1/sample HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n")
    # a declared 64 MB body: 413 from the header alone, while the client has sent none of it
    start = time.monotonic()
    status = _raw_post(served["url"], head + f"Content-Length: {64 << 20}\r\n\r\n", [])
    assert " 413 " in status and time.monotonic() - start < 15
    # a chunked body with no length: refused once it passes the limit, long before 64 MB arrive
    chunk = b"x" * 65_536
    parts = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(1024))
    sent = []
    status = _raw_post(served["url"], head + "Transfer-Encoding: chunked\r\n\r\n",
                       (sent.append(p) or p for p in parts))
    assert " 413 " in status and len(sent) * len(chunk) < 32 * limit + (8 << 20)
