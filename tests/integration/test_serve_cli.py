"""``cadasg serve`` as an operator runs it: its own Ray with token authentication, and SIGTERM drains
and exits 0 with no traceback. One subprocess (~30 s on 2 cores, mostly Ray and Serve starting)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from cadasg_dist.serving.auth import hash_key, new_key

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_then_drains_on_sigterm_and_exits_0(tiny_model, tmp_path):
    model_dir = tiny_model.save(tmp_path / "tiny")
    key = new_key()
    keys = tmp_path / "keys"
    keys.write_text(f"{hash_key(key)} model=tiny\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    proc = subprocess.Popen([sys.executable, "-m", "cadasg_dist.cli", "serve", str(model_dir), "--port", str(port),
                             "--keys-file", str(keys)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/sample", json={"n": 5, "seed": 1},
                            headers={"X-API-Key": key}, timeout=60)
        assert answer.status_code == 200 and answer.json()["n"] == 5
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "stopping: draining" in out and "Traceback" not in err
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_keys_are_url_safe_and_never_look_like_a_flag():
    keys = {new_key() for _ in range(2000)}
    assert len(keys) == 2000
    assert all(not k.startswith("-") and k.replace("-", "").replace("_", "").isalnum() for k in keys)


def test_serve_starts_its_own_ray_with_token_auth(monkeypatch):
    import ray

    from cadasg_dist.cli.serve import start_private_ray

    seen = {}
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # set, then removed: the fixture restores the real state
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # another test's session Ray may be up
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw, mode=os.environ.get("RAY_AUTH_MODE"),
                                                             token=os.environ.get("RAY_AUTH_TOKEN")))
    start_private_ray()
    assert seen["address"] == "local"  # never joins a cluster `ray start` left on the machine
    assert seen["mode"] == "token" and len(seen["token"]) == 64
