"""API keys and per-key rate limits for the sampling endpoint (Ray Serve has no auth of its own).

Keys are stored only as SHA-256 hashes, one entry a line, in a file and/or an environment variable
(``CADASG_API_KEYS``, entries separated by newlines or ``;``)::

    # comment
    sha256:<64 hex digits> model=<name|*>[,<name>...] [label=<text>]

A client sends its key in ``X-API-Key`` (or ``Authorization: Bearer <key>``). No key or an unknown
key is 401; a known key whose ``model=`` list lacks this model's name is 403. Keys are compared by
hash with ``hmac.compare_digest`` over every entry (no early exit), and never logged: logs and
errors name a key by its ``label`` (default: its line). Make a key and its entry with
``python -m cadasg_dist.serving.auth new --model NAME`` (the key is printed once; keep only the entry).

Rate limit: a token bucket per key (``rate`` requests/s, ``burst`` at most), kept per replica:
with R replicas a key can get up to R times the rate.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cadasg_dist.errors import ConfigError

_ENTRY = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class ApiKey:
    digest: bytes  # SHA-256 of the key, 32 bytes
    models: frozenset[str]  # model names it may use; "*" = any
    label: str  # how logs and errors name this key

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models


def hash_key(key: str) -> str:
    """The keys-file form of ``key``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def parse_keys(text: str, origin: str) -> list[ApiKey]:
    """Entries of a keys file or variable; ``ConfigError`` names the bad line, never its content."""
    keys = []
    lines = [part for line in text.splitlines() for part in line.split(";")]
    for i, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        first, *fields = line.split()
        match = _ENTRY.match(first)
        if match is None:
            raise ConfigError(f"{origin} entry {i}: expected 'sha256:<64 hex digits> model=NAME'; store key "
                              "hashes, not keys (python -m cadasg_dist.serving.auth hash)")
        opts = dict(f.split("=", 1) for f in fields if "=" in f)
        unknown = [f.split("=", 1)[0] for f in fields if "=" not in f or f.split("=", 1)[0] not in ("model", "label")]
        if unknown:
            raise ConfigError(f"{origin} entry {i}: unknown field {unknown[0]!r}; fields: model=, label=")
        if not opts.get("model"):
            raise ConfigError(f"{origin} entry {i}: give the models this key may use: model=NAME[,NAME] or model=*")
        models = frozenset(m.strip() for m in opts["model"].split(",") if m.strip())
        keys.append(ApiKey(bytes.fromhex(match.group(1)), models, opts.get("label", f"{origin}#{i}")))
    return keys


class KeyRing:
    """The keys allowed on this server."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)

    @classmethod
    def from_sources(cls, keys_file: str | None, env_var: str | None,
                     environ: Mapping[str, str] | None = None) -> KeyRing:
        environ = os.environ if environ is None else environ
        keys: list[ApiKey] = []
        if keys_file:
            path = Path(keys_file)
            if not path.is_file():
                raise ConfigError(f"API keys file not found: {path}")
            keys += parse_keys(path.read_text(), path.name)
        if env_var and environ.get(env_var):
            keys += parse_keys(environ[env_var], env_var)
        return cls(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, presented: str) -> ApiKey | None:
        """The entry whose hash matches ``presented``, or None; constant time in which entry matched."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


class RateLimiter:
    """Token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError(f"rate limit needs rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # digest -> (tokens, time)
        self._lock = threading.Lock()

    def acquire(self, key: bytes) -> float:
        """0.0 if the request may go now (and spends a token), else the seconds until it may."""
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


KEY_PREFIX = "cdsg_"


def new_key() -> str:
    """A fresh API key: ``cdsg_`` and 43 URL-safe characters (256 random bits). The prefix keeps a key
    from starting with "-" (which command-line parsers read as a flag) and lets secret scanners
    recognise it."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadasg_dist.serving.auth",
                                     description="make or hash CA-DASG API keys")
    sub = parser.add_subparsers(dest="cmd", required=True)
    new = sub.add_parser("new", help="print a fresh key (once) and its keys-file entry")
    new.add_argument("--model", default="*", help="model name(s) it may use, comma-separated, or *")
    new.add_argument("--label", help="name for logs")
    sub.add_parser("hash", help="read a key from stdin, print its keys-file entry (model=* by default)")
    args = parser.parse_args(argv)
    if args.cmd == "new":
        key = new_key()
        label = f" label={args.label}" if args.label else ""
        print(f"key (give it to the client, do not store it): {key}")
        print(f"entry (add to the keys file): {hash_key(key)} model={args.model}{label}")
    else:
        print(f"{hash_key(input().strip())} model=*")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
