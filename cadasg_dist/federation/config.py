"""Settings of a federated run: the ``federated:`` section of a run config.

``FederatedConfig`` is the one source of these defaults: the ``cadasg federated`` flags, the
``federated:`` section of a YAML config and the Flower run config (``[tool.flwr.app.config]``)
all parse into it. The engine's own settings (model, training, privacy) stay in ``CADASGConfig``;
``load_configs`` reads both from one YAML file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cadasg_dist.config import CADASGConfig, build_dataclass, read_yaml_mapping, require, split_section, to_plain
from cadasg_dist.errors import ConfigError

# SecAgg+ maps each masked float to an integer in [0, 2^22); the client and the server must agree.
SECAGG_QUANTIZATION = 2**22
SECAGG_MODULUS = 2**32


@dataclass(frozen=True)
class FederatedConfig:
    # Federated rounds: each sends the global model out and aggregates the silos' updates.
    rounds: int = 5
    # Local passes over a silo's rows per round (each silo trains rounds * local_epochs epochs).
    local_epochs: int = 2
    # "fedprox" adds mu/2 * ||w - w_global||^2 to every local update (non-IID silos).
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    # FedProx's mu (strategy fedprox only).
    proximal_mu: float = 0.01
    # Server learning rate (FedAvg with a server step, Reddi et al. 2021): the global model moves by
    # server_lr times the silos' weighted mean update. 1.0 is plain FedAvg. Tried under DP to restore
    # the central run's progress per epoch: 2.0 made HI worse (docs/concepts/decisions.md).
    server_lr: float = 1.0
    # The silos' Adam learning rates are the engine's (train.lr_generator, train.lr_critic) times
    # this. Under DP a silo's mean gradient carries more noise than the central run's (the same batch
    # from fewer rows: a larger sampling rate, so a larger noise multiplier), and Adam divides each step by the
    # gradient's running scale, so a silo's steps on the signal shrink; a larger local rate gives
    # them back. Measured (docs/concepts/decisions.md): HI at epsilon 8, utility gap 7.7 % at 1.0
    # and 1.8 % at 2.0 (two runs each); rwm5yr by year unchanged (8.8 % / 8.9 %); HI without DP
    # -0.4 % at 2.0 (0.9 % at 1.0).
    local_lr_scale: float = 2.0
    # Flower SecAgg+ (legacy workflow API): the server only sees sums of the silos' updates.
    secagg: bool = True
    # Shares per silo and reconstruction threshold, as fractions of the silos sampled in a round.
    secagg_shares: float = 1.0
    # Shares needed to reconstruct a dropped silo's mask, as a fraction of the silos sampled.
    secagg_threshold: float = 0.67
    # Public upper bound on a silo's rows: SecAgg+ weights each update by rows / max_weight, and the
    # cache statistics are scaled by it to fit the quantization range.
    secagg_max_weight: float = 100_000.0
    # The range SecAgg+ quantizes values in: a weighted update value beyond it is refused, not clipped.
    secagg_clip: float = 8.0
    # A round is aggregated from the silos that answered within round_timeout seconds, if at least
    # min_clients did; otherwise it is retried (round_retries) and then the run stops with an error.
    min_clients: int = 2
    # Silos a round must survive losing after it started (SIGKILL, network): SecAgg+'s reconstruction
    # threshold is lowered to (silos sampled - max_dropouts) when secagg_threshold asks for more. A run
    # needs min_clients + max_dropouts silos (checked before it starts).
    max_dropouts: int = 1
    # Retries of a round that could not be aggregated (fewer than min_clients replies, or SecAgg+
    # halted), each over the silos still connected; then the run stops with a non-zero exit and no
    # model. A retried round's silos spend privacy budget again (their ledgers record it).
    round_retries: int = 1
    # Seconds a round waits for the silos' answers.
    round_timeout: float = 600.0
    # Seconds the server waits for min_clients silos to connect before the first round.
    connect_timeout: float = 300.0
    # The shared schema is always a DP release (docs/guides/federated.md); when training is not private it
    # is released under this epsilon.
    schema_epsilon: float = 1.0
    # Private runs: the share of each silo's Renyi budget spent on releasing its row count (a
    # Gaussian count, recorded in its ledger): the noisy count, never the exact one, sets the silo's
    # sampling rate and is its aggregation weight (docs/guides/federated.md).
    count_share: float = 0.02
    # True declares that no privacy unit (person) has rows in two silos: each silo's guarantee then
    # covers everyone it holds and the run's is the largest silo's (parallel composition). False, the
    # default: a unit may span silos, and the run's guarantee composes every silo's releases.
    disjoint_units: bool = False
    # The plan round (federation.plan_round): how the Gaussian noise of each plan release is shared.
    # "split": each silo adds N(0, sigma^2 / k) for k silos, so the secure sum carries exactly the
    # noise of a pooled release (the same utility); a silo's own share is protected only while the
    # sum stays secret and the other silos do not pool their shares. "full": each silo adds the
    # whole sigma, so its contribution is DP on its own whatever the others do, and the sum carries
    # sqrt(k) times the noise (docs/guides/federated.md).
    plan_noise: Literal["split", "full"] = "split"
    # Testing only: "SILO:ROUND:raise" or "SILO:ROUND:hang" makes silo index SILO fail in ROUND.
    inject_failure: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.rounds >= 1, f"federated.rounds must be >= 1, got {self.rounds}"),
            (self.local_epochs >= 1, f"federated.local_epochs must be >= 1, got {self.local_epochs}"),
            (self.proximal_mu >= 0, f"federated.proximal_mu must be >= 0, got {self.proximal_mu}"),
            (self.server_lr > 0 and math.isfinite(self.server_lr),
             f"federated.server_lr must be a finite number > 0, got {self.server_lr}"),
            (self.local_lr_scale > 0 and math.isfinite(self.local_lr_scale),
             f"federated.local_lr_scale must be a finite number > 0, got {self.local_lr_scale}"),
            (self.min_clients >= 1, f"federated.min_clients must be >= 1, got {self.min_clients}"),
            (self.max_dropouts >= 0, f"federated.max_dropouts must be >= 0, got {self.max_dropouts}"),
            (self.round_retries >= 0, f"federated.round_retries must be >= 0, got {self.round_retries}"),
            (not self.secagg or self.min_clients >= 2,
             f"federated.min_clients={self.min_clients} with SecAgg+: a secure sum needs 2 silos or more, set "
             "federated.min_clients >= 2"),
            (self.round_timeout > 0, f"federated.round_timeout must be > 0 seconds, got {self.round_timeout}"),
            (0 < self.secagg_shares <= 1, f"federated.secagg_shares must be in (0, 1], got {self.secagg_shares}"),
            (0 < self.secagg_threshold <= 1,
             f"federated.secagg_threshold must be in (0, 1], got {self.secagg_threshold}"),
            (self.secagg_max_weight >= 1, f"federated.secagg_max_weight must be >= 1, got {self.secagg_max_weight}"),
            (self.secagg_clip > 0, f"federated.secagg_clip must be > 0, got {self.secagg_clip}"),
            (self.schema_epsilon > 0 and math.isfinite(self.schema_epsilon),
             f"federated.schema_epsilon must be a finite number > 0, got {self.schema_epsilon}"),
            (0 < self.count_share < 1, f"federated.count_share must be in (0, 1), got {self.count_share}"),
            (self.plan_noise in ("split", "full"),
             f"federated.plan_noise must be 'split' or 'full', got {self.plan_noise!r}"),
        ]
        require(checks)
        if self.inject_failure is not None:
            parse_failure(self.inject_failure)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> FederatedConfig:
        return build_dataclass(cls, raw or {}, "federated.")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FederatedConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **values: Any) -> FederatedConfig:
        return FederatedConfig.from_dict({**self.to_dict(), **values})


def check_silo_count(fed: FederatedConfig, silos: int) -> None:
    """Refuse a federation too small for its settings: every round must still reach ``min_clients``
    after losing ``max_dropouts`` silos."""
    if silos < fed.min_clients + fed.max_dropouts:
        raise ConfigError(f"federated.min_clients={fed.min_clients} and federated.max_dropouts={fed.max_dropouts} need "
                          f"at least {fed.min_clients + fed.max_dropouts} silos, there are {silos}: lower "
                          "federated.max_dropouts (0: every round needs all silos) or federated.min_clients")


def parse_failure(spec: str) -> tuple[int, int, str]:
    """``"SILO:ROUND:KIND"`` -> (silo index, round, "raise" | "hang")."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or parts[2] not in ("raise", "hang"):
        raise ConfigError(f"federated.inject_failure must look like SILO:ROUND:raise or SILO:ROUND:hang, got {spec!r}")
    return int(parts[0]), int(parts[1]), parts[2]


def load_configs(path: str | Path | None, overrides: Mapping[str, Any] | None = None
                 ) -> tuple[CADASGConfig, FederatedConfig]:
    """Both configs from one YAML file (its ``federated:`` section and everything else), then the
    dotted ``overrides`` (``federated.*`` keys for the federation, the rest for the engine)."""
    if path is None:
        cfg, fed = CADASGConfig(), FederatedConfig()
    else:
        raw = read_yaml_mapping(path)
        federated = raw.pop("federated", None)
        cfg, fed = CADASGConfig.from_dict(raw), FederatedConfig.from_dict(federated)
    engine, federation = split_section(overrides or {}, "federated")
    return (cfg.replace(**engine) if engine else cfg), (fed.replace(**federation) if federation else fed)
