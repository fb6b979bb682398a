"""Replica memory on large answers: one replica, one JSON request of n rows at a time streamed to a
client that drops the bytes, the replica's RSS polled every 0.1 s: before the request, its peak,
and 3 s after the answer ended. Through Serve's proxy, or with ``--direct-ingress`` on the
replica's own port.

    .venv/bin/python bench/serve_memory.py --model MODEL --rows 1000000,3000000
    .venv/bin/python bench/serve_memory.py --model MODEL --rows 3000000 --direct-ingress
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve_load import KEY, _deploy, _direct_ports, _free_block, _free_port  # noqa: E402


def replica_pid() -> int:
    """The PID of the one running replica of the bench deployment."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"ServeReplica:bench" in Path(f"/proc/{entry}/cmdline").read_bytes():
                return int(entry)
        except OSError:
            continue
    raise SystemExit("no running replica of the bench deployment")


def rss_mb(pid: int) -> float:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def one_answer(port: int, n: int) -> tuple[int, float]:
    """(bytes, seconds) of one JSON answer of ``n`` rows, read and dropped 1 MB at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/sample", body=json.dumps({"n": n, "seed": 1, "format": "json"}),
                 headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"{n} rows: HTTP {response.status} {response.read(300)!r}")
    size = 0
    while chunk := response.read(1 << 20):
        size += len(chunk)
    conn.close()
    return size, time.perf_counter() - start


def measure(port: int, pid: int, n: int) -> dict:
    before, peak, stop = rss_mb(pid), [0.0], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    size, seconds = one_answer(port, n)
    stop.set()
    watcher.join()
    time.sleep(3)
    return {"n": n, "rss_before_mb": round(before), "peak_mb": round(max(peak[0], before)),
            "after_3s_mb": round(rss_mb(pid)), "answer_mb": round(size / 2**20), "seconds": round(seconds, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained model directory")
    ap.add_argument("--rows", default="1000000,3000000", help="comma-separated n, one request each, in order")
    ap.add_argument("--direct-ingress", action="store_true", help="ask the replica's own port, not the proxy")
    ap.add_argument("--balanced", action="store_true",
                    help="ask through the connection balancer, as `cadasg serve` does (implies --direct-ingress)")
    args = ap.parse_args()
    import ray
    from ray import serve

    from cadasg_dist.serving.auth import hash_key

    os.environ["CADASG_BENCH_KEYS"] = f"{hash_key(KEY)} model=bench"
    args.direct_ingress = args.direct_ingress or args.balanced
    if args.direct_ingress:
        from cadasg_dist.cli.serve import direct_ingress_env

        direct_ingress_env(_free_block(8), 2)  # what `cadasg serve` sets
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        rows = [int(n) for n in args.rows.split(",")]
        _deploy(args.model, (1, 1), max_rows=max(rows))
        for _ in range(60):  # the replica opens its port just after it reports RUNNING
            if not args.direct_ingress or _direct_ports():
                break
            time.sleep(0.5)
        if args.direct_ingress:
            port = _direct_ports()[0]
        if args.balanced:
            from cadasg_dist.serving.balancer import Balancer, serve_targets

            balancer = Balancer("127.0.0.1", _free_port(), serve_targets("bench", "127.0.0.1"))
            balancer.start()
            port = balancer.port
        pid = replica_pid()
        one_answer(port, 1_000)  # warm-up: the first draw fits the calibration, starts the pools
        path = "balancer" if args.balanced else "direct ingress" if args.direct_ingress else "proxy"
        print("| path | n | RSS before MB | peak MB | 3 s after MB | answer MB | s |")
        print("|---|---|---|---|---|---|---|")
        for n in rows:
            r = measure(port, pid, n)
            print(f"| {path} | {n:,} | {r['rss_before_mb']:,} | {r['peak_mb']:,} | {r['after_3s_mb']:,} | "
                  f"{r['answer_mb']:,} | {r['seconds']} |", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
