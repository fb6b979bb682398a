"""The private fit: the one training loop with DP steps, Poisson batches of units, the budget guard,
and one ledger for the whole run (preprocessing, every step, the final cache pass).

Privacy caveats first:

* Everything a step reads from real rows is clipped and noised (``private.step.DPState``); the
  ledger records one composed mechanism per step, and the loop asks the budget guard before each
  step, so training stops at the last step the target ε covers (with the final pass reserved).
* The table's size (rows and units) is treated as public, as in Opacus: it sets q and the default δ.
* The noise and the Poisson batches come from the OS's entropy, never from ``train.seed``: the seed
  is saved in the artifact, and noise anyone can replay protects nothing. A private run is
  therefore not bit-reproducible (weights are still initialised from the seed, which is public).

The budget split is documented in docs/concepts/privacy.md; the accounting in docs/concepts/accounting.md.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.cache import ContextCache
from cadasg_dist.data.schema import Schema
from cadasg_dist.errors import ConfigError, InvalidDataError, PrivacyBudgetError
from cadasg_dist.model.networks import ModelDims
from cadasg_dist.privacy import entropy
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.private.budget import BudgetPlan, plan_budget, private_configs
from cadasg_dist.private.sampling import UnitSampler
from cadasg_dist.private.step import REAL_ROW_METRICS, DPState, PrivateBatch
from cadasg_dist.train.fit import final_cache_pass
from cadasg_dist.train.loop import ProgressFn, TrainingLoop, as_tensors, new_cache, use_threads
from cadasg_dist.train.step import TrainState

log = logging.getLogger(__name__)


def fit_private(config: CADASGConfig, x: np.ndarray, context: np.ndarray, dims: ModelDims, schema: Schema,
                progress: ProgressFn | None = None, *, units: np.ndarray | None = None,
                ledger: PrivacyLedger | None = None, plan: BudgetPlan | None = None
                ) -> tuple[TrainState, ContextCache, PrivacyLedger]:
    """Train with (ε, δ)-DP on (N, D) features ``x`` and (N,) context ids; returns state, cache and
    ledger (``state.dp.report()`` is the artifact's privacy summary).

    ``units`` (N,) gives each row's privacy unit (at most ``privacy.max_rows_per_unit`` rows each;
    None = one row per unit); ``ledger`` holds the preprocessing releases already spent and ``plan``
    the run's budget plan, both from ``private.prepare.prepare_private`` (planned here when None).
    Raises ``PrivacyBudgetError`` when the schema holds statistics read from raw rows or the budget
    cannot cover a single step.
    """
    cfg = config
    use_threads(cfg)
    raw = schema.private_statistics()
    if raw:
        raise PrivacyBudgetError(f"the schema holds statistics read from raw rows outside the ledger: "
                                 f"{', '.join(raw)}; build it with private.prepare.prepare_private")
    n_rows = len(x)
    unit_ids = np.arange(n_rows) if units is None else np.asarray(units, dtype=np.int64)
    rows_per_unit = 1 if units is None else cfg.privacy.max_rows_per_unit
    if units is not None and (len(unit_ids) != n_rows or np.bincount(unit_ids).max() > rows_per_unit):
        raise InvalidDataError(f"units must give one unit per row with at most privacy.max_rows_per_unit="
                               f"{rows_per_unit} rows each; cap them with private.sampling.cap_units")
    n_units = int(unit_ids.max()) + 1
    has_utility = bool(dims.target_spans)
    if plan is None:
        plan = plan_budget(cfg, n_rows=n_rows, n_units=n_units, has_utility=has_utility,
                           spent=ledger.mechanisms if ledger is not None else ())
    if ledger is None:
        ledger = PrivacyLedger(delta=plan.delta)
    if ledger.delta != plan.delta:
        raise ConfigError(f"the ledger's delta {ledger.delta} differs from the run's {plan.delta}")
    run_cfg, final_cache = private_configs(cfg, plan, rows_per_unit)
    state = TrainState.create(dims, run_cfg)
    cache = new_cache(dims, run_cfg)
    # the DP step divides by the expected batch q·n with the plan's n: the released count in a run
    # prepared by prepare_private, never the exact one
    dp = DPState(run_cfg, plan, ledger, n_units=plan.n_units, has_utility=has_utility, strata=dims.strata,
                 n_cells=cache.n_cells, final_cache=final_cache)
    state.generator.manual_seed(entropy.secret_seed())  # it draws the cache's noise
    dp.attach(state)
    if not dp.next_step_fits():
        raise PrivacyBudgetError(f"epsilon={cfg.privacy.epsilon} does not cover a single training step at noise "
                                 f"multiplier {plan.step_sigma:.4g}; raise epsilon or privacy.noise_multiplier")
    xs, cs = as_tensors(x, context)
    sampler = UnitSampler(unit_ids, plan.sample_rate)
    _train(run_cfg, state, cache, dp, xs, cs, sampler, units is not None, progress)
    if cfg.cache.final_pass:
        with dp.final_release(cache):
            final_cache_pass(run_cfg, state, cache, xs, cs)
    log.info("private training spent epsilon=%.4f of %.4f (delta=%.3g) in %d steps", ledger.epsilon(),
             cfg.privacy.epsilon, plan.delta, dp.steps_taken)
    return state, cache, ledger


def _train(cfg: CADASGConfig, state: TrainState, cache: ContextCache, dp: DPState, xs: torch.Tensor,
           cs: torch.Tensor, sampler: UnitSampler, by_unit: bool, progress: ProgressFn | None) -> None:
    plan = dp.plan
    epochs = plan.steps // plan.steps_per_epoch
    average = WeightAverage(state.nets, cfg.train.weight_averaging)
    loop = TrainingLoop(cfg, state, cache, guard=dp, hidden=REAL_ROW_METRICS, after_step=average.update)
    loop.train(lambda: poisson_batches(xs, cs, sampler, plan.steps_per_epoch, by_unit), epochs, progress=progress)
    average.load_into()


def poisson_batches(xs: torch.Tensor, cs: torch.Tensor, sampler: UnitSampler, steps: int, by_unit: bool):  # noqa: ANN201
    """One epoch of ``steps`` Poisson batches of units."""
    for _ in range(steps):
        rows, local = sampler.sample()
        yield PrivateBatch(xs[rows], cs[rows], units=local if by_unit else None)


class WeightAverage:
    """EMA of a module's parameters over the training steps (Polyak averaging), loaded into the
    module at the end. Each iterate is already a DP release, so their average is post-processing."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = list(module.parameters())
        self.average = [p.detach().clone() for p in self.params] if decay > 0 else []

    @torch.no_grad()
    def update(self) -> None:
        if self.average:
            torch._foreach_mul_(self.average, self.decay)
            torch._foreach_add_(self.average, [p.detach() for p in self.params], alpha=1.0 - self.decay)

    @torch.no_grad()
    def load_into(self) -> None:
        for p, a in zip(self.params, self.average):
            p.copy_(a)
