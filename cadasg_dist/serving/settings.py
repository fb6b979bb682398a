"""Typed arguments of the serving application: the one source of its defaults.

``serve run cadasg_dist.serving.app:build_app model_dir=...``, ``cadasg_dist/serving/config.yaml``
(its ``args:``) and ``cadasg serve`` all parse into :class:`ServeArgs`; unknown keys are refused.
:class:`VersionConfig` is the deployment's ``user_config``: set ``model_dir`` there and redeploy to
swap model versions in place, without restarting replicas.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cadasg_dist.errors import ConfigError

# Not Serve's 8000: Flower's SuperLink listens there on the same machines.
DEFAULT_PORT = 8700


class ServeArgs(BaseModel):
    """What the app builder takes. Deployment fields (replicas, CPUs) apply to the one deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_dir: str = Field(description="model directory written by `cadasg train`")
    model_name: str | None = Field(None, description="name API keys refer to (model=NAME); default: the "
                                                     "directory's name")
    version: str | None = Field(None, description="version label; default: a hash of the artifact's checksums")
    # auth
    keys_file: str | None = Field(None, description="file of 'sha256:<hex> model=<name|*>' lines")
    keys_env: str | None = Field("CADASG_API_KEYS", description="environment variable with more entries")
    allow_anonymous: bool = Field(False, description="serve without API keys (local experiments only)")
    rate_limit_per_s: float | None = Field(100.0, gt=0, description="requests a second per key; None: no limit")
    rate_limit_burst: int = Field(200, ge=1)
    # requests
    max_rows: int = Field(1_000_000, gt=0, description="largest n; above it the answer is 413")
    max_body_bytes: int = Field(65_536, gt=0)
    chunk_rows: int = Field(20_000, gt=0, description="answers with more rows are streamed in chunks of this many")
    # batching: up to batch_max_requests requests with n <= merge_max_n that arrive within
    # batch_wait_timeout_s share passes of at most batch_max_rows rows
    merge_max_n: int = Field(2_000, gt=0)
    batch_max_requests: int = Field(32, ge=1)
    batch_max_rows: int = Field(8_192, gt=0)
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    sample_threads: int = Field(2, ge=1, description="threads per replica that sample and encode")
    reconnect_every: int = Field(200, ge=0, description="a replica answers `Connection: close` to every this "
                                 "many-th request, so keep-alive clients spread over replicas that autoscaling "
                                 "added (cadasg serve balances connections); 0: never")
    # deployment
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    max_ongoing_requests: int = Field(64, ge=1)
    # Serve's own defaults (metrics pushed every 10 s, averaged over 30 s, 30 s upscale delay) add
    # up to ~25 s before a second replica even starts; these react within seconds, the look-back
    # window still smoothing single bursts, while the downscale delay keeps replicas through a lull.
    upscale_delay_s: float = Field(1.0, ge=0)
    downscale_delay_s: float = Field(20.0, ge=0)
    metrics_interval_s: float = Field(1.0, gt=0, description="how often replicas report their load to Serve")
    look_back_period_s: float = Field(5.0, gt=0, description="window the load is averaged over")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica (torch runs one thread)")

    @model_validator(mode="after")
    def _consistent(self) -> ServeArgs:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.merge_max_n > self.batch_max_rows:
            raise ValueError(f"merge_max_n ({self.merge_max_n}) is above batch_max_rows ({self.batch_max_rows})")
        if self.look_back_period_s < self.metrics_interval_s:
            raise ValueError(f"look_back_period_s ({self.look_back_period_s}) is below metrics_interval_s "
                             f"({self.metrics_interval_s}): the window would hold no report")
        if self.batch_max_requests > self.max_ongoing_requests:
            raise ValueError(f"batch_max_requests ({self.batch_max_requests}) is above max_ongoing_requests "
                             f"({self.max_ongoing_requests}): a batch could never fill")
        return self

    @property
    def name(self) -> str:
        return self.model_name or Path(self.model_dir).resolve().name

    def autoscaling_config(self) -> dict[str, float | int]:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": self.min_replicas, "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s,
                "metrics_interval_s": self.metrics_interval_s, "look_back_period_s": self.look_back_period_s}

    @classmethod
    def parse(cls, raw: dict | ServeArgs) -> ServeArgs:
        """``raw`` validated; a ``ConfigError`` naming the first bad field otherwise."""
        if isinstance(raw, cls):
            return raw
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None


class VersionConfig(BaseModel):
    """The deployment's ``user_config``: which artifact to serve. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_dir: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, raw: dict) -> VersionConfig:
        try:
            return cls.model_validate(raw or {})
        except ValidationError as exc:
            raise ConfigError(f"user_config: {_first_error(exc)} (keys: model_dir, version)") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]
