"""Load test of the Serve sampling endpoint on localhost, the load coming from a second process.

    .venv/bin/python bench/serve_load.py run --model /tmp/serve_model --duration 30 --out bench/results/serve_load.json
    .venv/bin/python bench/serve_load.py client --url http://127.0.0.1:8701 --key K --n 100 --concurrency 32

``run`` starts Ray and Serve in this process, then for each setting deploys the app and starts
``client`` as a subprocess: by default a raw asyncio load generator (keep-alive connections,
request bytes from a template, ~0.07 ms of CPU a request; ``--client httpx`` for the earlier one,
~3.7 ms, which on 2 cores was much of what it measured). Every run is bounded by a duration and a
request count. Settings:

* small: n=100 rows a request, 32 concurrent clients, JSON, with 1 and with 2 fixed replicas:
  p50/p99 latency and requests/s (goal p99 <= 100 ms);
* large: n=100,000 rows a request, Arrow, 1 client per replica: rows/s through HTTP as a share of
  in-process ``sample()`` rows/s with the same single torch thread a replica has (goal >= 50%);
* soak: the small setting for ``--soak`` seconds on 2 replicas: errors must be zero;
* autoscale: min 1, max 2 replicas under the small load, replica count polled each second, then
  the load stops and we wait for the scale-down;
* noop: the small setting against a bare Serve deployment (FastAPI ingress, one route that reads
  the body and returns the bytes of a real 100-row answer, no auth, no batching, no model): what
  Ray Serve's own request path costs on this host, so the small setting reads as a ratio to it;
* uvicorn: the same no-op route on plain uvicorn + FastAPI in one process, without Ray: shows
  whether the load generator itself limits the small setting;
* sampler: the floor for the small setting: this endpoint's code (auth, validation, merging of
  concurrent requests, the sampler, JSON) on plain uvicorn in one process, without Ray;
* direct: with ``--direct-ingress`` (Serve's RAY_SERVE_ENABLE_DIRECT_INGRESS=1), the small setting
  sent straight to the replicas' own ports, the clients spread round-robin over them;
* balanced: with ``--direct-ingress``, the small setting through ``serving.balancer`` on one port
  in this process (what ``cadasg serve`` runs by default);
* kill: with ``--direct-ingress``, the small setting through the balancer on 2 replicas, one of
  them SIGKILLed from outside a third of the way in: errors, requests sent again to the other
  replica, and when Serve's replacement runs.

Numbers from a shared 2-core machine vary with whatever else runs there: the JSON records the
load average before and after each setting.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

KEY = "bench-key-do-not-use-elsewhere"


# --- the load generator (second process) -------------------------------------------------------
# httpx builds a Request, a header model and a Response per call: at 32 clients on 2 shared cores
# the client's own CPU was part of what the server-side numbers measured. This one keeps one
# HTTP/1.1 keep-alive connection per client, writes request bytes from a template, and reads only
# the status line, the few headers it records, and the body by Content-Length (or chunked framing).
_WANT = (b"x-rows", b"x-batch-requests", b"server-timing", b"connection")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], int]:
    """(status, the headers in ``_WANT``, body bytes) of one response; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name in _WANT:
            headers[name] = value.strip()
    if not chunked:
        await reader.readexactly(length)
        return status, headers, length
    size = 0
    while True:
        part = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(part + 2)
        size += part
        if part == 0:
            return status, headers, size


def _raw_sender(url: str, key: str) -> Any:
    """A coroutine factory: ``send(body) -> (status, headers)`` over one keep-alive connection."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    template = (f"POST /v1/sample HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n").encode()
    conn: list[Any] = []

    async def send(body: bytes) -> tuple[int, dict[bytes, bytes]]:
        if not conn:
            conn.extend(await asyncio.open_connection(host, port))
        reader, writer = conn
        try:
            writer.write(template.replace(b"{}", str(len(body)).encode()) + body)
            status, headers, _ = await _read_response(reader)
            if headers.get(b"connection", b"").lower() == b"close":  # the server asks for a new connection
                conn.clear()
                writer.close()
            return status, headers
        except BaseException:
            conn.clear()
            writer.close()
            raise

    return send


def _httpx_sender(client: Any, key: str) -> Any:
    async def send(body: bytes) -> tuple[int, dict[bytes, bytes]]:
        r = await client.post("/v1/sample", content=body, headers={"X-API-Key": key,
                                                                    "Content-Type": "application/json"})
        await r.aread()
        return r.status_code, {k.encode(): r.headers[k].encode() for k in ("x-rows", "x-batch-requests",
                                                                             "server-timing") if k in r.headers}

    return send


async def _load(url: str, key: str, n: int, fmt: str, concurrency: int, duration: float, max_requests: int,
                transport: str = "raw") -> dict[str, Any]:
    import contextlib

    latencies: list[float] = []
    app_ms: list[float] = []  # time inside the replica's route (Server-Timing), small answers only
    batches: list[int] = []
    errors: dict[str, int] = {}
    rows = 0
    sent = 0
    deadline = time.perf_counter() + duration
    async with contextlib.AsyncExitStack() as stack:
        if transport == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=url.split(",")[0], timeout=120, limits=limits))

        async def worker(w: int) -> None:
            nonlocal rows, sent
            urls = url.split(",")  # several (replicas' own ports): client w uses urls[w % len]
            send = _httpx_sender(client, key) if transport == "httpx" else _raw_sender(urls[w % len(urls)], key)
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = b'{"n": %d, "seed": %d, "format": "%s"}' % (n, w * 1_000_003 + sent, fmt.encode())
                start = time.perf_counter()
                try:
                    status, headers = await asyncio.wait_for(send(body), 120)
                    ok, label = status == 200, str(status)
                except Exception as exc:  # noqa: BLE001  (every failure is counted, none ends the run)
                    ok, label = False, type(exc).__name__
                if ok:
                    latencies.append(time.perf_counter() - start)
                    rows += int(headers.get(b"x-rows", n))
                    batches.append(int(headers.get(b"x-batch-requests", 1)))
                    timing = headers.get(b"server-timing", b"")
                    if b"dur=" in timing:
                        app_ms.append(float(timing.split(b"dur=")[1]))
                else:
                    errors[label] = errors.get(label, 0) + 1

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*[worker(w) for w in range(concurrency)])
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"n": n, "format": fmt, "concurrency": concurrency, "client": transport, "requests": len(latencies),
            "errors": errors, "seconds": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 1),
            "rows_per_s": round(rows / wall), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p90_ms": round(float(np.percentile(lat, 90)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "max_ms": round(float(lat.max()), 1), "mean_batch_requests": round(float(np.mean(batches or [1])), 2),
            "app_p50_ms": round(float(np.median(app_ms)), 1) if app_ms else None,
            "client_cpu_ms_per_request": round(cpu * 1000 / max(len(latencies), 1), 3)}


def client_main(args: argparse.Namespace) -> int:
    coro = _load(args.url, args.key, args.n, args.format, args.concurrency, args.duration, args.max_requests,
                 args.client)
    try:
        import uvloop  # the raw client's event loop costs less per request on uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(json.dumps(result))
    return 0


# --- the driver ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLIENT = {"transport": "raw"}  # set from run's --client


def _client(url: str, *, n: int, fmt: str, concurrency: int, duration: float, max_requests: int = 1_000_000
            ) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "client", "--url", url, "--key", KEY, "--n", str(n), "--format", fmt,
           "--concurrency", str(concurrency), "--duration", str(duration), "--max-requests", str(max_requests),
           "--client", CLIENT["transport"]]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    return json.loads(out.strip().splitlines()[-1])


def _deploy(model: str, replicas: tuple[int, int], **extra: Any) -> None:
    from ray import serve

    from cadasg_dist.serving.app import bind
    from cadasg_dist.serving.settings import ServeArgs

    args = ServeArgs(model_dir=model, model_name="bench", keys_env="CADASG_BENCH_KEYS", rate_limit_per_s=None,
                     min_replicas=replicas[0], max_replicas=replicas[1], num_cpus=0.5, **extra)
    serve.run(bind(args), name="bench", route_prefix="/")
    _wait_replicas(replicas[0], timeout=120)


def _noop_app(answer: bytes):
    """A Serve app that does no work: the floor under any sampling endpoint on this host. (This
    module has no ``from __future__ import annotations``: FastAPI must see ``Request`` itself.)"""
    from fastapi import FastAPI, Request, Response
    from ray import serve

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    @serve.ingress(api)
    class Noop:
        @api.post("/v1/sample")
        async def sample(self, request: Request) -> Response:
            await request.body()
            return Response(answer, media_type="application/json", headers={"X-Rows": "100"})

    return Noop


def _deploy_noop(model: str, replicas: int) -> None:
    from ray import serve

    from cadasg_dist.synthesizer import CADASG

    answer = CADASG.load(model).sample(100, seed=0).to_json(orient="records").encode()
    serve.run(_noop_app(answer).options(num_replicas=replicas).bind(), name="bench", route_prefix="/")


UVICORN_NOOP = """
import sys, uvicorn
from fastapi import FastAPI, Request, Response
answer = open(sys.argv[2], "rb").read()
app = FastAPI()

@app.post("/v1/sample")
async def sample(request: Request) -> Response:
    await request.body()
    return Response(answer, media_type="application/json", headers={"X-Rows": "100"})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


UVICORN_SAMPLER = """
import asyncio, os, sys, uvicorn
from cadasg_dist.serving.api import create_app
from cadasg_dist.serving.service import SamplingService, replica_process, settle_heap
from cadasg_dist.serving.settings import ServeArgs

replica_process()
args = ServeArgs(model_dir=sys.argv[2], model_name="bench", keys_env="CADASG_BENCH_KEYS", rate_limit_per_s=None)
queue = []

async def merge(job):
    # what @serve.batch does, without Ray: requests arriving within batch_wait_timeout_s share a pass
    fut = asyncio.get_running_loop().create_future()
    queue.append((job, fut))
    if len(queue) == 1:
        asyncio.get_running_loop().call_later(args.batch_wait_timeout_s, lambda: asyncio.ensure_future(flush()))
    elif len(queue) >= args.batch_max_requests:
        await flush()
    return await fut

async def flush():
    batch = queue[:]
    queue.clear()
    if batch:
        frames = await service.sample_merged([j for j, _ in batch])
        for (_, fut), out in zip(batch, frames):
            fut.set_result(out)

service = SamplingService(args, merge=merge)
service.load(args.model_dir)
settle_heap()
uvicorn.run(create_app(service), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _uvicorn_sampler(model: str) -> tuple[subprocess.Popen, str]:
    """The floor the issue names: this endpoint's own code (auth, validation, batching, sampler,
    encoding) behind plain uvicorn in one process, without Ray."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", UVICORN_SAMPLER, str(port), model],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    _wait_http(port)
    return proc, f"http://127.0.0.1:{port}"


def _free_block(size: int) -> int:
    """A free port whose next ``size`` ports are free too."""
    for _ in range(50):
        base = _free_port()
        if base + size < 65_000 and all(_port_free(base + i) for i in range(1, size + 1)):
            return base
    raise RuntimeError("no free block of ports")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_http(port: int) -> None:
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def _direct_ports() -> list[int]:
    """The ports replicas serve HTTP on themselves when RAY_SERVE_ENABLE_DIRECT_INGRESS=1."""
    low = int(os.environ.get("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "30000"))  # Serve's default
    found = []
    for port in range(low, low + 16):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                found.append(port)
    return found


def _uvicorn_noop(model: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    from cadasg_dist.synthesizer import CADASG

    answer = tmp / "answer.json"
    answer.write_text(CADASG.load(model).sample(100, seed=0).to_json(orient="records"))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", UVICORN_NOOP, str(port), str(answer)])
    import httpx

    for _ in range(100):
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/sample", content=b"{}")
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def _replica_states() -> dict[str, int]:
    from ray import serve

    status = serve.status().applications.get("bench")
    if status is None:
        return {}
    return {str(getattr(k, "value", k)): int(v)
            for k, v in status.deployments["CADASGSampler"].replica_states.items() if v}


def _replicas() -> int:
    return _replica_states().get("RUNNING", 0)


def _wait_replicas(count: int, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if _replicas() == count:
            return time.perf_counter() - start
        time.sleep(0.5)
    return float("nan")


def _in_process_rows_per_s(model_dir: str, n: int, repeats: int) -> float:
    import torch

    from cadasg_dist.synthesizer import CADASG

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a replica runs with
    try:
        model = CADASG.load(model_dir)
        model.sample(1_000, seed=0)
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            model.sample(n, seed=i)
            times.append(time.perf_counter() - start)
        return n / float(np.median(times))
    finally:
        torch.set_num_threads(threads)


def _load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def run_main(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from cadasg_dist.serving.auth import hash_key

    os.environ["CADASG_BENCH_KEYS"] = f"{hash_key(KEY)} model=bench"
    CLIENT["transport"] = args.client
    if args.throughput_optimized:  # Serve's documented fast path; must be set before Ray starts
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    if args.direct_ingress:  # replicas serve HTTP on their own ports, no proxy hop; before Ray starts
        from cadasg_dist.cli.serve import direct_ingress_env

        direct_ingress_env(_free_block(8), 2)  # what `cadasg serve` sets
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "duration_s": args.duration,
                               "throughput_optimized": args.throughput_optimized, "direct_ingress": args.direct_ingress,
                               "client": args.client, "small": {}, "large": {}}
    only = set(args.only.split(","))

    def setting(name: str, proc_args: dict[str, Any], at: str = url) -> dict[str, Any]:
        before = _load_avg()
        _client(at, n=100, fmt="json", concurrency=8, duration=3).communicate(timeout=120)  # warm-up
        res = _finish(_client(at, **proc_args))
        res.update(load_avg_before=before, load_avg_after=_load_avg())
        print(f"{name}: {json.dumps(res)}", file=sys.stderr, flush=True)
        return res

    if "large" in only:
        inproc = _in_process_rows_per_s(args.model, 100_000, repeats=3)
        results["in_process_rows_per_s_1_thread"] = round(inproc)
        print(f"in-process sample(100000): {inproc:,.0f} rows/s", file=sys.stderr, flush=True)
    if "sampler" in only:  # the floor: this endpoint's code on plain uvicorn, no Ray, same run
        proc, at = _uvicorn_sampler(args.model)
        try:
            results["sampler_uvicorn"] = setting("sampler on uvicorn", {
                "n": 100, "fmt": "json", "concurrency": 32, "duration": args.duration}, at=at)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    for r in (int(x) for x in args.replicas.split(",")):
        if not only & {"small", "large", "floor", "direct", "balanced"}:
            break
        _deploy(args.model, (r, r), **({} if args.batch_wait_ms is None
                                       else {"batch_wait_timeout_s": args.batch_wait_ms / 1000}))
        if "direct" in only and args.direct_ingress:
            time.sleep(2)  # the replicas open their ports just after they report RUNNING
            urls = ",".join(f"http://127.0.0.1:{p}" for p in _direct_ports())
            results.setdefault("direct", {})[str(r)] = setting(f"direct r={r}", {
                "n": 100, "fmt": "json", "concurrency": 32, "duration": args.duration}, at=urls)
        if "balanced" in only and args.direct_ingress:
            results.setdefault("balanced", {})[str(r)] = _balanced(r, args.duration, setting)
        if "floor" in only:  # one client: the latency of a request with nothing queued before it
            results.setdefault("floor", {})[str(r)] = setting(f"floor r={r}", {
                "n": 100, "fmt": "json", "concurrency": 1, "duration": min(args.duration, 15.0)})
        if "small" in only:
            results["small"][str(r)] = setting(f"small r={r}", {"n": 100, "fmt": "json", "concurrency": 32,
                                                                "duration": args.duration})
        if "large" in only:
            # measured again right before: the machine's load drifts, and the share should compare
            # HTTP with sample() under the same conditions
            here = _in_process_rows_per_s(args.model, 100_000, repeats=3)
            load = {"n": 100_000, "fmt": "arrow", "concurrency": r, "duration": args.duration, "max_requests": 400}
            large = (_balanced(r, args.duration, setting, load, name="large")  # cadasg serve's path
                     if args.direct_ingress else setting(f"large r={r}", load))
            large["in_process_rows_per_s_just_before"] = round(here)
            large["share_of_in_process"] = round(large["rows_per_s"] / here, 3)
            results["large"][str(r)] = large
    for r in (int(x) for x in args.replicas.split(",")) if "noop" in only else ():
        _deploy_noop(args.model, r)
        results.setdefault("noop", {})[str(r)] = setting(f"noop r={r}", {
            "n": 100, "fmt": "json", "concurrency": 32, "duration": args.duration})
    if "uvicorn" in only:
        with tempfile.TemporaryDirectory() as tmp:
            proc, at = _uvicorn_noop(args.model, Path(tmp))
            try:
                results["uvicorn"] = setting("uvicorn", {"n": 100, "fmt": "json", "concurrency": 32,
                                                         "duration": args.duration}, at=at)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    if args.soak:
        _deploy(args.model, (2, 2))
        results["soak"] = setting("soak r=2", {"n": 100, "fmt": "json", "concurrency": 32, "duration": args.soak})
    if "kill" in only and args.direct_ingress:
        results["kill"] = _kill_one(args.model, max(args.duration, 30.0))
    if "autoscale" in only:
        results["autoscale"] = _autoscale(args.model, url, args.duration, balanced=args.direct_ingress)
    serve.shutdown()
    ray.shutdown()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


def _balanced(replicas: int, duration: float, setting: Any, load: dict[str, Any] | None = None,
              name: str = "balanced") -> dict[str, Any]:
    """A setting (by default the small one) through the connection balancer of ``cadasg serve``,
    run in this process."""
    from cadasg_dist.serving.balancer import Balancer, serve_targets

    time.sleep(2)  # the replicas open their ports just after they report RUNNING
    balancer = Balancer("127.0.0.1", _free_port(), serve_targets("bench", "127.0.0.1"))
    balancer.start()
    try:
        small = {"n": 100, "fmt": "json", "concurrency": 32, "duration": duration}
        res = setting(f"{name} r={replicas}", load or small, at=f"http://127.0.0.1:{balancer.port}")
    finally:
        balancer.stop(grace_s=2)
    res["targets"] = len(balancer.targets)
    return res


def _replica_pids() -> list[int]:
    """PIDs of the bench deployment's replica processes."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"ServeReplica:bench" in Path(f"/proc/{entry}/cmdline").read_bytes():
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def _kill_one(model: str, duration: float) -> dict[str, Any]:
    """32 clients through the balancer on 2 replicas; one replica SIGKILLed at a third of the run."""
    import signal

    from cadasg_dist.serving.balancer import Balancer, serve_targets

    _deploy(model, (2, 2))
    time.sleep(2)  # the replicas open their ports just after they report RUNNING
    balancer = Balancer("127.0.0.1", _free_port(), serve_targets("bench", "127.0.0.1"))
    balancer.start()
    start = time.perf_counter()
    proc = _client(f"http://127.0.0.1:{balancer.port}", n=100, fmt="json", concurrency=32, duration=duration)
    time.sleep(duration / 3)
    victim = _replica_pids()[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.perf_counter() - start
    noticed = back = None  # when Serve's list lost the replica, and when it held two again
    while proc.poll() is None:
        two = _replica_states().get("RUNNING", 0) >= 2 and len(balancer.targets) >= 2
        now = round(time.perf_counter() - start, 1)
        if noticed is None and not two:
            noticed = now
        elif noticed is not None and back is None and two:
            back = now
        time.sleep(0.5)
    load = _finish(proc)
    balancer.stop(grace_s=2)
    out = {"killed_at_s": round(killed_at, 1), "replica_dropped_at_s": noticed, "two_running_again_at_s": back,
           "replayed": balancer.replayed, "load": load}
    print(f"kill: {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def _autoscale(model: str, url: str, duration: float, balanced: bool = False) -> dict[str, Any]:
    """Min 1, max 2 replicas under the small load: when the second replica starts, runs, and (through
    the balancer, ``balanced``) first holds client connections; then the scale-down."""
    from cadasg_dist.serving.balancer import Balancer, serve_targets

    _deploy(model, (1, 2), target_ongoing_requests=8, downscale_delay_s=15)  # the other knobs: ServeArgs defaults
    balancer = None
    if balanced:
        balancer = Balancer("127.0.0.1", _free_port(), serve_targets("bench", "127.0.0.1"))
        balancer.start()
        url = f"http://127.0.0.1:{balancer.port}"
    timeline: list[tuple[float, dict[str, int]]] = []  # (seconds, replica states) at each change
    connections: list[tuple[float, list[int]]] = []  # (seconds, open connections per replica) at each change
    start = time.perf_counter()

    def poll() -> None:
        states = _replica_states()
        if not timeline or timeline[-1][1] != states:
            timeline.append((round(time.perf_counter() - start, 1), states))
        spread = sorted(balancer.open.values()) if balancer else []
        if balancer and (not connections or connections[-1][1] != spread):
            connections.append((round(time.perf_counter() - start, 1), spread))

    proc = _client(url, n=100, fmt="json", concurrency=32, duration=max(duration, 45.0))
    while proc.poll() is None:
        poll()
        time.sleep(0.5)
    load = _finish(proc)
    stopped = time.perf_counter() - start
    while time.perf_counter() - stopped - start < 90 and (not timeline or timeline[-1][1] != {"RUNNING": 1}):
        poll()
        time.sleep(0.5)
    if balancer:
        balancer.stop(grace_s=2)
    running = [(t, s.get("RUNNING", 0)) for t, s in timeline]
    first_start = next((t for t, s in timeline if s.get("STARTING", 0) or sum(s.values()) >= 2), None)
    first_two = next((t for t, c in running if c >= 2), None)
    back = next((t for t, c in running if t > stopped and c == 1), None)
    both = next((t for t, spread in connections if len([c for c in spread if c]) >= 2), None)
    out = {"peak_running": max(c for _, c in running), "second_replica_starting_at_s": first_start,
           "second_replica_running_at_s": first_two, "second_replica_has_connections_at_s": both,
           "load_stopped_at_s": round(stopped, 1), "back_to_1_at_s": back, "timeline": timeline,
           "connections": connections, "load": load}
    print(f"autoscale: {json.dumps({k: v for k, v in out.items() if k not in ('timeline', 'load')})}",
          file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="deploy and measure every setting")
    r.add_argument("--model", required=True)
    r.add_argument("--duration", type=float, default=30.0, help="seconds per setting")
    r.add_argument("--soak", type=float, default=0.0, help="seconds of the zero-error run (0: skip)")
    r.add_argument("--out", help="JSON results file")
    r.add_argument("--replicas", default="1,2", help="fixed replica counts for small/large")
    r.add_argument("--only", default="floor,small,noop,uvicorn,sampler,large,autoscale",
                   help="settings to run (soak: see --soak)")
    r.add_argument("--client", choices=("raw", "httpx"), default="raw", help="the load generator's transport")
    r.add_argument("--batch-wait-ms", type=float, help="batch_wait_timeout_s of the small/direct deployments, "
                   "in ms (default: ServeArgs')")
    r.add_argument("--direct-ingress", action="store_true",
                   help="before Ray starts, set what `cadasg serve` sets (cli.serve.direct_ingress_env: replicas "
                        "answer on their own ports); 'direct' then loads those ports (clients spread round-robin), "
                        "'balanced', 'kill', 'large' and 'autoscale' go through the balancer")
    r.add_argument("--throughput-optimized", action="store_true",
                   help="set RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (Serve's fast path) before Ray starts")
    c = sub.add_parser("client", help="the load generator (run by `run` in a second process)")
    c.add_argument("--url", required=True)
    c.add_argument("--key", required=True)
    c.add_argument("--n", type=int, default=100)
    c.add_argument("--format", default="json")
    c.add_argument("--concurrency", type=int, default=32)
    c.add_argument("--duration", type=float, default=20.0)
    c.add_argument("--max-requests", type=int, default=1_000_000)
    c.add_argument("--client", choices=("raw", "httpx"), default="raw",
                   help="raw: asyncio streams, little CPU a request (default); httpx: the earlier client")
    args = parser.parse_args(argv)
    return run_main(args) if args.cmd == "run" else client_main(args)


if __name__ == "__main__":
    sys.exit(main())
