"""``cadasg serve`` with its default ingress: the balancer on PORT hands connections to the replicas,
which answer on PORT+1 and PORT+2 themselves with the same app (keys refused the same way, the same
rows for the same seed); a burst of parallel clients all get answers; SIGTERM drains and exits 0 with
no traceback and frees every port. One subprocess (~40 s on 2 cores, mostly Ray and Serve starting)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cadasg_dist.serving.auth import hash_key, new_key

pytestmark = pytest.mark.integration


def _free_block(size: int) -> int:
    """A port whose next ``size`` ports are free too (the proxy's and the replicas')."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size < 65_000 and all(_free(base + i) for i in range(1, size + 1)):
            return base
    raise RuntimeError("no free block of ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_ok(url: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    raise AssertionError(f"{url} never answered 200")


def test_the_balancer_serves_the_replicas_app_on_one_port(tiny_model, tmp_path):
    model_dir = tiny_model.save(tmp_path / "tiny")
    key = new_key()
    keys = tmp_path / "keys"
    keys.write_text(f"{hash_key(key)} model=tiny\n")
    port = _free_block(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAY_SERVE"))}
    proc = subprocess.Popen([sys.executable, "-m", "cadasg_dist.cli", "serve", str(model_dir), "--port", str(port),
                             "--keys-file", str(keys), "--replicas", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    front, replica = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    try:
        _wait_ok(f"{front}/healthz", proc, 240)
        _wait_ok(f"{replica}/healthz", proc, 60)
        body = {"n": 25, "seed": 9, "format": "arrow"}
        assert httpx.post(f"{front}/v1/sample", json=body, timeout=60).status_code == 401
        wrong = httpx.post(f"{front}/v1/sample", json=body, headers={"X-API-Key": key + "x"}, timeout=60)
        assert wrong.status_code == 401
        via_replica = httpx.post(f"{replica}/v1/sample", json=body, headers={"X-API-Key": key}, timeout=60)
        via_front = httpx.post(f"{front}/v1/sample", json=body, headers={"X-API-Key": key}, timeout=60)
        assert via_replica.status_code == via_front.status_code == 200
        assert via_replica.content == via_front.content
        assert via_replica.headers["X-Model-Version"] == via_front.headers["X-Model-Version"]
        with ThreadPoolExecutor(8) as pool:  # eight connections at once
            answers = list(pool.map(lambda s: httpx.post(f"{front}/v1/sample", json={"n": 10, "seed": s},
                                                         headers={"X-API-Key": key}, timeout=60), range(8)))
        assert [a.status_code for a in answers] == [200] * 8
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "stopping: draining" in out and f"ports {port + 1}-{port + 8}" in out and "Traceback" not in err
    assert all(_free(port + i) for i in range(9))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{front}/healthz", timeout=2)
