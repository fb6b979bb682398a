"""``cadasg serve`` as an operator runs it: its own Ray with token authentication, and keys that no
command line misreads. Serving, draining on SIGTERM and exit 0: tests/integration/test_serve_balancer.py."""

from __future__ import annotations

import os

import pytest

from cadasg_dist.serving.auth import new_key

pytestmark = pytest.mark.integration


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
