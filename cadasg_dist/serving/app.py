"""The Ray Serve application: one deployment class over the sampler, with a FastAPI ingress.

    serve run cadasg_dist.serving.app:build_app model_dir=runs/rwm keys_file=keys.txt  # typed args (ServeArgs)
    serve run cadasg_dist/serving/config.yaml                                         # the same, from a file
    cadasg serve runs/rwm --port 8700 --replicas 1:2                                  # the CLI

Each replica loads the artifact in ``__init__`` and keeps it; small requests (n <= merge_max_n)
that arrive together share one pass (``@serve.batch`` of up to batch_max_requests requests, cut
into passes of at most batch_max_rows rows); ``reconfigure``
swaps in another artifact given by ``user_config: {model_dir, version}`` while requests keep being
served (each request finishes on the version it started with); ``check_health`` fails a replica
whose model did not load, so Serve replaces it.

Privacy: replicas read only the artifact (the DP model and its noisy cache); sampling is
post-processing and spends no budget. Keys are checked at this ingress (Serve has no auth).
"""

# No `from __future__ import annotations`: Serve reads build_app's annotation to validate args.
import logging
import os
from typing import Any

import pandas as pd
from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from cadasg_dist.errors import CADASGError
from cadasg_dist.serving.api import create_app
from cadasg_dist.serving.sampler import SampleJob
from cadasg_dist.serving.service import SamplingService, replica_process, settle_heap
from cadasg_dist.serving.settings import ServeArgs, VersionConfig

log = logging.getLogger(__name__)

# Serve builds the ingress app in each replica process after the constructor ran; the builder
# takes no arguments, so the constructor leaves its service here (one replica per process). Only
# these module functions touch it: Serve ships the deployment class by value (with copies of the
# globals its methods name), but module functions by reference, so both see this one dict.
_REPLICA: dict[str, SamplingService] = {}


def _register(service: SamplingService) -> None:
    _REPLICA["service"] = service


def _replica_app() -> FastAPI:
    return create_app(_REPLICA["service"])


@serve.deployment(name="CADASGSampler", health_check_period_s=10, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=20)
@serve.ingress(_replica_app)
class CADASGSampler:
    def __init__(self, args: dict[str, Any]) -> None:
        replica_process()
        self.args = ServeArgs.parse(args)
        self.service = SamplingService(self.args, merge=self._merged)
        self._merged.set_max_batch_size(self.args.batch_max_requests)
        self._merged.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)
        try:
            self.service.load(self.args.model_dir, self.args.version)
        except (CADASGError, OSError) as exc:  # stay up so check_health can report it; Serve retries
            self.service.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model %s did not load: %s", self.args.model_dir, self.service.load_error)
        _register(self.service)
        settle_heap()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _merged(self, jobs: list[SampleJob]) -> list[tuple[pd.DataFrame, int]]:
        return await self.service.sample_merged(jobs)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Swap to ``user_config["model_dir"]``; raises (and keeps serving the old version in this
        replica) if it does not load. Unknown keys raise too."""
        cfg = VersionConfig.parse(user_config)
        if cfg.model_dir is None or self.service.is_current(cfg.model_dir, cfg.version):
            return
        await self.service.load_async(cfg.model_dir, cfg.version)

    async def check_health(self) -> None:
        self.service.check_health()


def build_app(args: ServeArgs) -> Application:
    """The application for ``serve run`` / ``serve deploy`` / ``serve.run`` (Serve validates ``args``)."""
    return bind(ServeArgs.parse(args if isinstance(args, ServeArgs) else dict(args)))


def bind(args: ServeArgs, version: VersionConfig | None = None) -> Application:
    """The deployment bound to ``args``; ``version`` (a ``user_config``) swaps the artifact in place.

    Deployed from a config (``serve deploy`` / ``serve run config.yaml``), a changed ``user_config``
    reconfigures the running replicas in place. From Python (``serve.run``), Serve treats every
    redeploy as new code and replaces the replicas one at a time, each draining its requests first.
    Neither drops a request.
    """
    actor: dict[str, Any] = {"num_cpus": args.num_cpus}
    if args.keys_env and os.environ.get(args.keys_env):
        # Replicas may run in processes started before the variable was set: pass it on. It holds
        # key hashes only, never keys.
        actor["runtime_env"] = {"env_vars": {args.keys_env: os.environ[args.keys_env]}}
    options: dict[str, Any] = {"autoscaling_config": args.autoscaling_config(),
                               "max_ongoing_requests": args.max_ongoing_requests, "ray_actor_options": actor}
    if version is not None:
        options["user_config"] = version.model_dump()
    return CADASGSampler.options(**options).bind(args.model_dump())
