"""API key entries, lookup, the token bucket, and the typed serving settings."""

from __future__ import annotations

import hashlib

import pytest

from cadasg_dist.errors import ConfigError
from cadasg_dist.serving.auth import KeyRing, RateLimiter, hash_key, main, parse_keys
from cadasg_dist.serving.settings import ServeArgs, VersionConfig


def test_hash_key_is_sha256_hex():
    assert hash_key("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_parse_entries_comments_and_separators():
    text = f"# keys\n{hash_key('k1')} model=rwm label=alice\n\n{hash_key('k2')} model=a,b;{hash_key('k3')} model=*"
    keys = parse_keys(text, "keys.txt")
    assert [k.label for k in keys] == ["alice", "keys.txt#4", "keys.txt#5"]
    assert keys[0].allows("rwm") and not keys[0].allows("other")
    assert keys[1].allows("b") and not keys[1].allows("rwm")
    assert keys[2].allows("anything")


@pytest.mark.parametrize("line, message", [
    ("plaintext-secret-key model=*", "store key hashes, not keys"),
    (f"{hash_key('k')}", "model=NAME"),
    (f"{hash_key('k')} model=* owner=bob", "unknown field 'owner'"),
    ("sha256:abcd model=*", "64 hex digits"),
])
def test_bad_entries_name_the_line_never_the_key(line, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_keys(line, "keys.txt")
    assert "plaintext-secret-key" not in str(err.value) and "entry 1" in str(err.value)


def test_lookup_and_sources(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(f"{hash_key('from-file')} model=m\n")
    ring = KeyRing.from_sources(str(path), "KEYS", environ={"KEYS": f"{hash_key('from-env')} model=*"})
    assert len(ring) == 2
    assert ring.lookup("from-file").models == frozenset({"m"})
    assert ring.lookup("from-env").allows("x")
    assert ring.lookup("nope") is None and ring.lookup("") is None
    with pytest.raises(ConfigError, match="not found"):
        KeyRing.from_sources(str(tmp_path / "missing"), None)


def test_token_bucket_refills_at_the_rate():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire(b"k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire(b"k") == pytest.approx(0.5)
    assert limiter.acquire(b"other") == 0.0  # buckets are per key
    now[0] = 0.5
    assert limiter.acquire(b"k") == 0.0
    assert limiter.acquire(b"k") > 0
    now[0] = 100.0
    assert [limiter.acquire(b"k") for _ in range(4)][-1] > 0  # never more than the burst


def test_new_key_command_prints_a_matching_entry(capsys):
    main(["new", "--model", "rwm", "--label", "ci"])
    out = capsys.readouterr().out.splitlines()
    key = out[0].split(": ", 1)[1]
    entry = out[1].split(": ", 1)[1]
    assert KeyRing(parse_keys(entry, "t")).lookup(key).label == "ci"


def test_serve_args_refuse_unknown_and_inconsistent_values():
    assert ServeArgs.parse({"model_dir": "runs/rwm"}).name == "rwm"
    with pytest.raises(ConfigError, match="replicas"):
        ServeArgs.parse({"model_dir": "m", "min_replicas": 3, "max_replicas": 2})
    with pytest.raises(ConfigError, match="max_rowz"):
        ServeArgs.parse({"model_dir": "m", "max_rowz": 5})
    with pytest.raises(ConfigError, match="model_dir"):
        ServeArgs.parse({})
    auto = ServeArgs.parse({"model_dir": "m", "min_replicas": 1, "max_replicas": 2}).autoscaling_config()
    assert auto["min_replicas"] == 1 and auto["max_replicas"] == 2 and auto["target_ongoing_requests"] > 0


def test_version_config_refuses_unknown_keys():
    assert VersionConfig.parse({"model_dir": "a", "version": "v2"}).version == "v2"
    with pytest.raises(ConfigError, match="user_config"):
        VersionConfig.parse({"model_path": "a"})


def test_autoscaling_reacts_in_seconds_and_serve_accepts_it():
    from ray.serve.config import AutoscalingConfig

    auto = ServeArgs.parse({"model_dir": "m", "min_replicas": 1, "max_replicas": 2}).autoscaling_config()
    parsed = AutoscalingConfig(**auto)  # Serve's own validation of every key we pass
    # a report each second, averaged over 5 s, 1 s before upscaling: far from Serve's 10/30/30 s
    assert parsed.metrics_interval_s <= 1 and parsed.look_back_period_s <= 5 and parsed.upscale_delay_s <= 1
    with pytest.raises(ConfigError, match="look_back_period_s"):
        ServeArgs.parse({"model_dir": "m", "metrics_interval_s": 5, "look_back_period_s": 2})
