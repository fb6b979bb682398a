"""One silo's side of a federated run: local rounds of the engine's ``train_step``, its own
context cache, and ONE privacy ledger for the whole run.

Privacy caveats first:

* Record-level DP inside the silo: when ``privacy.epsilon`` is finite every step is the engine's
  DP step (``private.step.DPState`` hooks: per-unit clipping, Gaussian noise, the cache's
  noisy statistics) with Poisson sampling of the silo's units. The noise is calibrated ONCE, for
  all ``rounds * local_epochs`` epochs plus the final cache release, on top of the plan's
  preprocessing releases; the ledger is restored from the client's state every round and keeps
  growing, so its epsilon covers the run, never a single round.
* Each silo adds the FULL calibrated noise to everything it sends (``share = 1``): its release is
  (epsilon, delta)-DP on its own, whatever the server or the other silos do with it, with or
  without secure aggregation.
* The silo's exact size never leaves it: a private silo first releases a noisy count
  (``federation.accounting.release_count``, recorded in its ledger as ``silo/count``) and plans
  with it: the sampling rate q = B / n-hat, the steps per epoch, the gradient's divisor and the
  aggregation weight all come from n-hat. A silo with no rows trains on empty Poisson batches and
  replies like the others. A non-private silo sends its exact row count as the weight.
* The FedProx term reads only the global and local weights: adding it is post-processing.
* The noise, the Poisson batches, the rows kept per unit and the encoder's tie spreading come from
  the OS's entropy in a private run (as in ``fit_private``); their generator states persist in the
  client's state between rounds, on the silo's own SuperNode, and never travel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from cadasg_dist.context.cache import CacheStats
from cadasg_dist.errors import PrivacyBudgetError
from cadasg_dist.federation.accounting import NoisyCount, count_sigma, release_count
from cadasg_dist.federation.config import FederatedConfig
from cadasg_dist.federation.plan import FederationPlan, SiloData
from cadasg_dist.federation.records import load_model_arrays, model_arrays
from cadasg_dist.privacy import entropy
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.private.budget import plan_budget, private_configs
from cadasg_dist.private.fit import poisson_batches
from cadasg_dist.private.sampling import UnitSampler
from cadasg_dist.private.step import REAL_ROW_METRICS, DPState
from cadasg_dist.train.fit import final_cache_pass
from cadasg_dist.train.loop import TrainingLoop, as_tensors, new_cache, shuffled_batches, use_threads
from cadasg_dist.train.step import Batch, TrainState

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RoundReport:
    steps: int
    seconds: float
    epsilon: float
    stopped: bool
    metrics: dict[str, float]


def silo_seed(base: int, index: int) -> int:
    """A distinct seed per silo for a non-private run (a private run draws its noise from the OS)."""
    return base + 1_000_003 * (index + 1)


class SiloTrainer:
    """A silo's training state between rounds; ``snapshot`` / ``restore`` move it through the
    Flower client's ``context.state`` (one message per round, possibly a fresh process)."""

    def __init__(self, plan: FederationPlan, fed: FederatedConfig, data: SiloData, *, index: int,
                 ledger: PrivacyLedger | None = None, count: NoisyCount | None = None) -> None:
        self.plan, self.fed, self.data = plan, fed, data
        self.count = count  # the released size (private runs): set once, kept in the snapshot
        self.seed = silo_seed(plan.config.train.seed, index)
        self.rounds_done = 0
        self.final_done = False
        cfg, dims = plan.config, plan.dims
        use_threads(cfg)
        self.xs, self.cs = as_tensors(data.x, data.context)
        self.ledger = ledger if ledger is not None else plan.silo_ledger()
        self.budget = self.dp = self.sampler = None
        self.rows_per_unit = 1 if data.units is None else cfg.privacy.max_rows_per_unit
        cfg = local_config(cfg, fed)
        if cfg.private:
            self.cfg = self._private_setup(cfg)
        else:
            self.cfg = cfg
            self.state = TrainState.create(dims, cfg, seed=self.seed)
        self.cache = new_cache(dims, self.cfg)
        self.loop = TrainingLoop(self.cfg, self.state, self.cache, guard=self.dp,
                                 hidden=REAL_ROW_METRICS if self.dp is not None else ())

    def _private_setup(self, cfg: Any) -> Any:
        """The silo's own budget plan (all rounds' epochs, on top of the plan's preprocessing), DP state
        and secret Poisson sampler; returns the config it trains with (the cache's release noise)."""
        dims, fed = self.plan.dims, self.fed
        total = cfg.replace(**{"train.epochs": fed.rounds * fed.local_epochs})
        if self.count is None:  # the first round: release the size once (a restored silo has it)
            units = None if self.data.units is None else self.data.n_units
            self.count, mech = release_count(self.data.n_rows, units, self.rows_per_unit,
                                             count_sigma(cfg, fed.count_share),
                                             np.random.default_rng(entropy.secret_seed()))
            self.ledger.record(name=mech.name, noise_multiplier=mech.noise_multiplier, sample_rate=1.0, steps=1,
                               sensitivity=mech.sensitivity)
        self.budget = plan_budget(total, n_rows=self.count.rows, n_units=self.count.units,
                                  has_utility=bool(dims.target_spans), spent=self.ledger.mechanisms)
        run_cfg, final_cache = private_configs(cfg, self.budget, self.rows_per_unit)
        self.state = TrainState.create(dims, run_cfg, seed=self.seed)
        self.state.generator.manual_seed(entropy.secret_seed())  # it draws the cache's noise: secret
        # No seed: the DP noise and the Poisson batches come from the OS's entropy, as in fit_private.
        self.dp = DPState(run_cfg, self.budget, self.ledger, n_units=self.count.units,
                          has_utility=bool(dims.target_spans), strata=dims.strata, n_cells=dims.contexts * dims.strata,
                          final_cache=final_cache)
        self.dp.attach(self.state)
        units = np.arange(self.data.n_rows) if self.data.units is None else self.data.units
        self.sampler = UnitSampler(units, self.budget.sample_rate)
        if not self.dp.next_step_fits() and not self.ledger.mechanisms[len(self.plan.preprocessing) + 1:]:
            raise PrivacyBudgetError(f"epsilon={cfg.privacy.epsilon} does not cover a single training step of this "
                                     "silo; raise epsilon or privacy.noise_multiplier")
        return run_cfg

    # --- a round -----------------------------------------------------------------------------
    def train_round(self, global_arrays: dict[str, torch.Tensor], proximal_mu: float = 0.0) -> RoundReport:
        """``local_epochs`` epochs of the one training loop from the global weights; returns what happened."""
        load_model_arrays(self.state.nets, global_arrays)
        hooks = add_proximal_term(self.state, proximal_mu) if proximal_mu > 0 else []
        start, steps = time.perf_counter(), self.state.step
        try:
            means = self.loop.run_epoch(self._round_batches()) or {}
        finally:
            for h in hooks:
                h.remove()
        self.rounds_done += 1
        self.state.history.append({"round": self.rounds_done, **means})
        stopped = self.dp is not None and self.dp.stop_reason is not None
        return RoundReport(steps=self.state.step - steps, seconds=time.perf_counter() - start, epsilon=self.epsilon,
                           stopped=stopped, metrics=means)

    def _round_batches(self) -> Iterator[Batch]:
        """A round's batches: ``local_epochs`` shuffled epochs, or as many epochs of Poisson batches."""
        if self.dp is not None:
            steps = self.fed.local_epochs * self.budget.steps_per_epoch
            by_unit = self.data.units is not None
            return poisson_batches(self.xs, self.cs, self.sampler, steps, by_unit)
        rng = np.random.default_rng([self.seed, self.rounds_done])
        size = self.cfg.train.batch_size
        return itertools.chain.from_iterable(shuffled_batches(self.xs, self.cs, size, rng)
                                             for _ in range(self.fed.local_epochs))

    def final_release(self, global_arrays: dict[str, torch.Tensor]) -> CacheStats:
        """The silo's cache statistics under the final global encoder, as ONE noisy release (or the
        local EMA cache when ``cache.final_pass`` is off). Asked twice, it returns the same release."""
        if self.final_done:
            return self.cache.stats
        load_model_arrays(self.state.nets, global_arrays)
        if self.plan.config.cache.final_pass:
            with self.dp.final_release(self.cache) if self.dp is not None else contextlib.nullcontext():
                final_cache_pass(self.cfg, self.state, self.cache, self.xs, self.cs)
        self.final_done = True
        return self.cache.stats

    @property
    def weight(self) -> int:
        """The aggregation weight this silo sends: its noisy count in a private run, else its rows."""
        return self.count.rows if self.count is not None else self.data.n_rows

    @property
    def epsilon(self) -> float:
        return self.ledger.epsilon() if self.ledger.private else math.inf

    def model_arrays(self) -> dict[str, torch.Tensor]:
        return model_arrays(self.state.nets)

    # --- persistence between rounds ----------------------------------------------------------
    def snapshot(self) -> tuple[str, bytes]:
        """(ledger JSON, everything else as torch-serialised plain data). The ledger is kept apart,
        readable, because it is what the silo's guarantee rests on."""
        train = self.state.state_dict()
        train.pop("nets")  # replaced by the global weights at every round
        blob: dict[str, Any] = {"train": train, "cache": self.cache.state_dict(), "rounds_done": self.rounds_done,
                                "final_done": self.final_done, "history": self.state.history}
        if self.count is not None:
            blob["count"] = self.count.to_dict()
        if self.dp is not None:
            blob["dp"] = {"steps_taken": self.dp.steps_taken, "stop_reason": self.dp.stop_reason or "",
                          "final_released": self.dp.final_released, "noise": self.dp.noise.get_state(),
                          "sampler": self.sampler.generator.get_state()}
        buf = io.BytesIO()
        torch.save(blob, buf)
        return self.ledger.to_json(), buf.getvalue()

    @classmethod
    def restore(cls, plan: FederationPlan, fed: FederatedConfig, data: SiloData, *, index: int, ledger_json: str,
                blob: bytes) -> SiloTrainer:
        saved = torch.load(io.BytesIO(blob), weights_only=True)
        count = NoisyCount.from_dict(saved["count"]) if "count" in saved else None
        trainer = cls(plan, fed, data, index=index, ledger=PrivacyLedger.from_json(ledger_json), count=count)
        trainer.state.load_state_dict({**saved["train"], "nets": trainer.state.nets.state_dict()})
        trainer.state.history = list(saved["history"])
        trainer.cache.load_state_dict(saved["cache"])
        trainer.rounds_done, trainer.final_done = int(saved["rounds_done"]), bool(saved["final_done"])
        if trainer.dp is not None:
            dp = saved["dp"]
            trainer.dp.steps_taken = int(dp["steps_taken"])
            trainer.dp.stop_reason = dp["stop_reason"] or None
            trainer.dp.final_released = bool(dp["final_released"])
            trainer.dp.noise.set_state(dp["noise"])
            trainer.sampler.generator.set_state(dp["sampler"])
        return trainer


def local_config(cfg: Any, fed: FederatedConfig) -> Any:
    """The engine config a silo trains with: the plan's, learning rates scaled by
    ``federated.local_lr_scale`` (hyperparameters only: the privacy plan does not depend on them)."""
    if fed.local_lr_scale == 1.0:
        return cfg
    t = cfg.train
    return cfg.replace(**{"train.lr_generator": t.lr_generator * fed.local_lr_scale,
                          "train.lr_critic": t.lr_critic * fed.local_lr_scale})


def add_proximal_term(state: TrainState, mu: float) -> list[Any]:
    """FedProx: before every optimizer step add mu * (w - w_global) to each gradient, i.e. the
    gradient of mu/2 * ||w - w_global||^2, anchored at the weights the round started from."""
    anchors = {p: p.detach().clone() for p in state.nets.parameters()}

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.add_(p.detach() - anchors[p], alpha=mu)

    return [opt.register_step_pre_hook(hook) for opt in (state.opt_generator, state.opt_critic, state.opt_utility)]
