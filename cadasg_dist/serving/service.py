"""What the endpoint does, without HTTP or Ray: keys, the loaded version, sampling.

One ``SamplingService`` per replica. The Serve deployment gives it a ``merge`` coroutine (its
``@serve.batch`` method) for small requests; without one (tests, a plain uvicorn) every request is
sampled on its own. Sampling runs on a small thread pool so the event loop keeps accepting requests
(and building the next batch) meanwhile.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from cadasg_dist.errors import ConfigError
from cadasg_dist.memory import never_keep_freed_memory
from cadasg_dist.serving.auth import ApiKey, KeyRing, RateLimiter
from cadasg_dist.serving.models import LoadedModel, content_hash, load_model
from cadasg_dist.serving.sampler import SampleJob, iter_sample, sample_many
from cadasg_dist.serving.settings import ServeArgs

log = logging.getLogger(__name__)

Merge = Callable[[SampleJob], Awaitable[tuple[pd.DataFrame, int]]]


class RequestRejected(Exception):
    """A request the service refuses: HTTP ``status`` and a JSON ``body``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.headers = status, headers or {}
        self.body = {"detail": detail, **extra}


@dataclass(frozen=True)
class Sampled:
    loaded: LoadedModel
    frame: pd.DataFrame
    batch_requests: int  # how many requests shared the pass (1 when not merged)


class SamplingService:
    def __init__(self, args: ServeArgs, *, keys: KeyRing | None = None, merge: Merge | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.keys = keys if keys is not None else KeyRing.from_sources(args.keys_file, args.keys_env, environ)
        if not len(self.keys) and not args.allow_anonymous:
            raise ConfigError(f"no API keys: give keys_file or set {args.keys_env}, or allow_anonymous=true "
                              "for a local experiment "
                              "(python -m cadasg_dist.serving.auth new --model NAME makes a key)")
        self.limiter = (RateLimiter(args.rate_limit_per_s, args.rate_limit_burst)
                        if args.rate_limit_per_s else None)
        self.merge = merge
        self.current: LoadedModel | None = None
        self.load_error: str | None = None
        self.answers = 0  # sample answers given: every reconnect_every-th asks the client to reconnect
        self.pool = ThreadPoolExecutor(args.sample_threads, thread_name_prefix="cadasg-sample")

    # --- versions ---------------------------------------------------------------------------
    def load(self, model_dir: str, version: str | None = None) -> LoadedModel:
        """Load an artifact and make it current; requests already running keep their version.
        Raises ``ArtifactError`` and keeps the current version if the new one does not load."""
        loaded = load_model(model_dir, name=self.args.name, version=version)
        self.current, self.load_error = loaded, None
        log.info("serving model %s version %s from %s", loaded.name, loaded.version, model_dir)
        return loaded

    async def load_async(self, model_dir: str, version: str | None = None) -> LoadedModel:
        return await asyncio.get_running_loop().run_in_executor(None, self.load, model_dir, version)

    def is_current(self, model_dir: str, version: str | None) -> bool:
        cur = self.current
        return (cur is not None and Path(cur.model_dir).resolve() == Path(model_dir).resolve()
                and cur.content_hash == content_hash(model_dir) and (version is None or version == cur.version))

    def check_health(self) -> None:
        """Raises when no model is loaded (Serve then replaces the replica)."""
        if self.current is None:
            raise RuntimeError(f"no model loaded: {self.load_error or 'not loaded yet'}")

    # --- requests ---------------------------------------------------------------------------
    def authorize(self, presented: str | None) -> ApiKey | None:
        """The caller's key (None when anonymous access is on), else ``RequestRejected``."""
        if not presented:
            if self.args.allow_anonymous and not len(self.keys):
                return None
            raise RequestRejected(401, "missing API key: send it in the X-API-Key header",
                                  {"WWW-Authenticate": "ApiKey"})
        key = self.keys.lookup(presented)
        if key is None:
            raise RequestRejected(401, "unknown API key", {"WWW-Authenticate": "ApiKey"})
        if not key.allows(self.args.name):
            log.info("key %s refused on model %s", key.label, self.args.name)
            raise RequestRejected(403, f"this API key may not use model {self.args.name!r}")
        if self.limiter is not None:
            wait = self.limiter.acquire(key.digest)
            if wait > 0:
                raise RequestRejected(429, f"rate limit of {self.args.rate_limit_per_s:g} requests/s exceeded",
                                      {"Retry-After": str(max(1, round(wait + 0.5)))})
        return key

    def model(self) -> LoadedModel:
        cur = self.current
        if cur is None:
            raise RequestRejected(503, "no model is loaded yet; retry shortly", {"Retry-After": "5"})
        return cur

    async def sample(self, loaded: LoadedModel, n: int, context: dict[str, Any], seed: int) -> Sampled:
        job = SampleJob(loaded.model, n, context, seed, loaded.merge)
        if n <= self.args.merge_max_n and self.merge is not None:
            frame, batch = await self.merge(job)
            return Sampled(loaded, frame, batch)
        run = partial(loaded.model.sample, n, context=context or None, seed=seed)
        frame = await asyncio.get_running_loop().run_in_executor(self.pool, run)
        return Sampled(loaded, frame, 1)

    def stream(self, loaded: LoadedModel, n: int, context: dict[str, Any], seed: int) -> Iterator[pd.DataFrame]:
        """A large answer's rows, one library chunk at a time, generated as they are read (the same
        rows as ``sample``); validates before the first row."""
        return iter_sample(loaded.model, n, context=context or None, seed=seed)

    async def sample_merged(self, jobs: list[SampleJob]) -> list[tuple[pd.DataFrame, int]]:
        """One pass over concurrent small jobs (the body of the deployment's ``@serve.batch``)."""
        loop = asyncio.get_running_loop()
        frames = await loop.run_in_executor(self.pool, lambda: sample_many(jobs, max_rows=self.args.batch_max_rows))
        return [(frame, len(jobs)) for frame in frames]


def trim_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def replica_process() -> None:
    """The process settings of a replica, before it loads a model: its BLAS threads
    (``sampler_threads``), and glibc's defaults for freed memory (``never_keep_freed_memory``: with
    the sampler's reuse options a replica grew by each large answer it streamed)."""
    never_keep_freed_memory()
    sampler_threads()


def settle_heap() -> None:
    """Move every object alive now (the imports, Ray's and Serve's among them, and the loaded
    model) out of the cyclic garbage collector's reach (``gc.freeze``), once a replica is ready.
    A full collection then walks only what requests allocate: with Ray imported it walked about
    156,000 objects, 70 ms during which the replica answers nothing, which showed up as the tail
    of the latency at 32 clients. Objects are still freed by reference counting as before."""
    gc.collect()
    gc.freeze()


def sampler_threads() -> None:
    """One BLAS thread a replica (``CADASG_SERVE_THREADS``): small passes are faster, and replicas
    do not fight for cores. Replicas sample on numpy (the model is loaded without torch), whose
    OpenBLAS fixes its thread pool when it loads, so the pool is limited through threadpoolctl."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ.get("CADASG_SERVE_THREADS", "1")))
