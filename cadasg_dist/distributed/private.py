"""DP-SGD across workers: per-example clipping on each worker, the calibrated noise added once for
the global batch, and one ledger that counts the global sample rate.

Privacy caveats first:

* Sampling. Every worker Poisson-samples its own rows at the *global* rate q = batch_size / n. A
  row is in exactly one shard, so the union of the workers' batches is a Poisson sample of the whole
  table at rate q: the mechanism the accountant assumes. The ledger records each step once, at q
  and the engine's σ, exactly as a single-worker run does (``DPState.account_step``); every worker
  keeps the same ledger and rank 0 checkpoints it.
* Noise. Each worker adds ``1/N`` of the noise *variance* to its clipped sum and divides by
  ``q·n/N``; the mean all-reduce then gives (Σ clipped + N(0, σ²C²)) / (q·n), the single-worker
  release. The cache does the same with its statistics (``sync.ShardCache``). The VAE gradient is
  all-reduced inside ``privatize_vae`` so that the loss balancer reads the norm of the *merged*
  release (a worker's own gradient carries only ``1/N`` of the variance).
* Trust. One worker's contribution alone is noised with ``σ/√N``; ring all-reduce shows partial
  sums to peers. The guarantee is for whoever sees the model; the workers of a run trust each
  other (keep their traffic on a private network, docs/guides/cluster.md).
* Failures. A step counts once any worker has begun it (``journal``): the steps a killed worker
  group loses after its last checkpoint are recorded when it resumes, and the run keeps its planned
  step count, so it ends with the ε of an uninterrupted run.
* Units. A privacy unit's rows must be clipped together, but context shards can split a unit
  across workers; ``privacy.unit`` is refused here (use ``CADASG.fit`` for unit-level privacy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from cadasg_dist.config import CacheConfig, CADASGConfig
from cadasg_dist.context.cache import ContextCache
from cadasg_dist.distributed.journal import JournalClient, lost_steps
from cadasg_dist.distributed.preflight import check_private_config
from cadasg_dist.distributed.sync import Collectives, flatten, unflatten_into
from cadasg_dist.errors import PrivacyBudgetError
from cadasg_dist.model.networks import CADASGNetworks, ModelDims
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.private.budget import BudgetPlan, plan_budget, private_configs
from cadasg_dist.private.fit import poisson_batches
from cadasg_dist.private.sampling import UnitSampler
from cadasg_dist.private.step import REAL_ROW_METRICS, DPState
from cadasg_dist.train.rows import EncodedRows
from cadasg_dist.train.step import Batch

__all__ = ["REAL_ROW_METRICS", "ShardPrivacy", "check_private_config"]

log = logging.getLogger(__name__)


def worker_plan(plan: BudgetPlan, world: int) -> BudgetPlan:
    """The plan one of ``world`` workers noises with: each DP-SGD release at σ/√N (1/N of the variance)."""
    scale = 1.0 / math.sqrt(world)
    parts = {k: v * scale if k.startswith("dpsgd/") else v for k, v in plan.parts.items()}
    return dataclasses.replace(plan, parts=parts)


class ShardedDPState(DPState):
    """``DPState`` for one of N workers: expected batch q·n/N, noise shares, merged VAE release."""

    def __init__(self, cfg: CADASGConfig, plan: BudgetPlan, ledger: PrivacyLedger, *, n_rows: int, world: int,
                 comm: Collectives, has_utility: bool, strata: int, n_cells: int,
                 final_cache: CacheConfig | None = None, journal: JournalClient | None = None) -> None:
        # No seed: every worker's noise comes from its own OS entropy (independent shares, not replayable).
        super().__init__(cfg, worker_plan(plan, world), ledger, n_units=n_rows, has_utility=has_utility,
                         strata=strata, n_cells=n_cells, final_cache=final_cache)
        self.global_plan = plan
        self.world = world
        self.comm = comm
        self.global_expected = plan.sample_rate * n_rows
        self.expected_units = self.global_expected / world  # the mean all-reduce divides by N again
        self.journal = journal
        self.steps_lost = 0  # counted in the ledger, begun before a failure, not in the weights
        self.final_lost = False  # the final cache pass was begun before a failure: counted, not redone

    def allows_step(self) -> bool:
        """The budget guard, then the write-ahead: the journal holds this step before it draws noise."""
        if not super().allows_step():
            return False
        if self.journal is not None:
            self.journal.begin(self.steps_taken + 1)
        return True

    @contextlib.contextmanager
    def final_release(self, cache: ContextCache) -> Iterator[None]:
        if self.journal is not None:
            self.journal.begin_final()
        with super().final_release(cache):
            yield

    def journal_state(self) -> dict[str, Any] | None:
        """What the journal holds now (None without one): read by rank 0 before any worker of the
        group begins a step, and broadcast, so every worker settles the same count."""
        return None if self.journal is None else self.journal.state()

    def settle_lost(self, state: dict[str, Any] | None) -> int:
        """After a restore: record the steps (and the final pass) ``state`` (``journal_state``) shows
        begun since the checkpoint, once; returns the number of steps."""
        if state is None:
            return 0
        lost = lost_steps(state, self.steps_taken)
        if lost:
            self.ledger.record(name=self.name, noise_multiplier=self.plan.step_sigma,
                               sample_rate=self.plan.sample_rate, steps=lost)
            self.steps_taken += lost
            self.steps_lost += lost
            log.warning("%d DP steps begun before a worker failure are counted as spent", lost)
        if state["final"] and not self.final_released:
            self.account_final()
            self.final_lost = True
            log.warning("the final cache pass begun before a worker failure is counted, not repeated")
        return lost

    def privatize_vae(self, nets: CADASGNetworks, batch: Batch, onehot: torch.Tensor, eps: torch.Tensor,
                      cfg: CADASGConfig, shared: list[torch.Tensor]) -> float:
        """Merge the VAE release across workers now and return its debiased norm on ``shared``."""
        super().privatize_vae(nets, batch, onehot, eps, cfg, shared)
        grads = list(self._vae.values())
        unflatten_into(self.comm.mean(flatten(grads), "gradients"), grads)
        pair = self._encoder_decoder(nets)
        names = {id(p): n for n, p in pair.named_parameters()}
        noise_var = (self.global_plan.parts["dpsgd/vae"] * self.clip / self.global_expected) ** 2  # merged release
        square = sum(float(self._vae[names[id(p)]].pow(2).sum()) - p.numel() * noise_var for p in shared)
        return math.sqrt(max(square, 0.0))

    def gradient_noise_std(self, part: str, name: str) -> float:
        """The merged release's noise (every worker's share, averaged): what each optimizer steps on."""
        return self.global_plan.parts[part] * self.clip / self.global_expected

    def report(self) -> dict[str, Any]:
        """``DPState.report`` in terms of the merged releases (what the ledger accounts), plus the split."""
        out = super().report()
        p = self.global_plan
        out["expected_units_per_step"] = self.global_expected
        out["noise_multipliers"] = {"train_step": p.step_sigma, **p.parts, **p.full_pass}
        out["workers"] = self.world
        out["noise_variance_share_per_worker"] = 1.0 / self.world
        out["steps_lost_to_failures"] = self.steps_lost
        out["final_cache_pass_lost"] = self.final_lost
        return out

    def refresh_cells(self, cache: ContextCache) -> None:
        """The public cell weights ``account_step`` would have left (after a restore)."""
        counts = cache.cell_counts().float()
        self._cell_weights = counts if float(counts.sum()) > 0 else torch.ones_like(counts)


class ShardPrivacy:
    """A worker's private-training pieces: the run's budget plan, noisy cache config, DP state and sampler."""

    def __init__(self, cfg: CADASGConfig, dims: ModelDims, ledger_state: dict[str, Any], *,
                 plan: dict[str, Any] | None, n_rows: int, local_rows: int, world: int, comm: Collectives,
                 journal: str | None = None) -> None:
        """``plan``: the driver's budget plan as plain data (``BudgetPlan.to_dict``; planned here when None);
        ``journal``: the name of the run's spend journal actor (None in a single-process test)."""
        check_private_config(cfg)
        spent = PrivacyLedger.from_state_dict(ledger_state)
        has_utility = bool(dims.target_spans)
        self.plan = (BudgetPlan.from_dict(plan) if plan is not None else
                     plan_budget(cfg, n_rows=n_rows, n_units=n_rows, has_utility=has_utility, spent=spent.mechanisms))
        self.run_cfg, final_cache = private_configs(cfg, self.plan, 1)
        n_rows = self.plan.n_rows or n_rows  # the driver's plan holds the released count
        self.dp = ShardedDPState(self.run_cfg, self.plan, spent, n_rows=n_rows, world=world, comm=comm,
                                 has_utility=has_utility, strata=dims.strata, n_cells=dims.contexts * dims.strata,
                                 final_cache=final_cache, journal=None if journal is None else JournalClient(journal))
        if not self.dp.next_step_fits():
            raise PrivacyBudgetError(f"epsilon={cfg.privacy.epsilon} does not cover a single training step at noise "
                                     f"multiplier {self.plan.step_sigma:.4g}; raise epsilon")
        self.sampler = UnitSampler(np.arange(local_rows), self.plan.sample_rate)  # secret Poisson batches
        # As the engine's private fit: whole epochs of the plan's steps (budget stops may end it sooner).
        self.epochs = self.plan.steps // self.plan.steps_per_epoch

    def batches(self, xs: EncodedRows, cs: torch.Tensor) -> Iterator[Batch]:
        """One epoch of Poisson batches of this worker's rows; the loop's budget guard stops every
        worker at the same step (they share the ledger). An epoch ends at the next multiple of
        ``steps_per_epoch`` counted steps: after a failure the resumed epoch takes only the steps
        the lost ones left in it."""
        spe = self.plan.steps_per_epoch
        return poisson_batches(xs, cs, self.sampler, spe - self.dp.steps_taken % spe, by_unit=False)

    def first_epoch(self) -> int:
        """The epoch the counted steps are in (0-based): where a resumed group goes on."""
        return self.dp.steps_taken // self.plan.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """Shared by every worker (rank 0 saves it): the ledger and the step counters."""
        return {"ledger": json.dumps(self.dp.ledger.state_dict()), "steps_taken": self.dp.steps_taken,
                "stop_reason": self.dp.stop_reason or "", "final_released": self.dp.final_released,
                "steps_lost": self.dp.steps_lost, "final_lost": self.dp.final_lost,
                "report": json.dumps(self.dp.report())}

    def load(self, state: dict[str, Any], cache: ContextCache) -> None:
        """Resume: the saved ledger holds every step up to the checkpoint; the worker then adds the
        steps begun after it from the journal (``ShardedDPState.settle_lost``), so every step is
        counted once. The noise and
        sampling streams are not restored (checkpoints never hold them): the restarted workers draw
        fresh secret ones, which changes nothing in the accounting."""
        self.dp.ledger.load_state_dict(json.loads(state["ledger"]))
        self.dp.steps_taken = int(state["steps_taken"])
        self.dp.stop_reason = state["stop_reason"] or None
        self.dp.final_released = bool(state["final_released"])
        self.dp.steps_lost = int(state.get("steps_lost", 0))
        self.dp.final_lost = bool(state.get("final_lost", False))
        self.dp.refresh_cells(cache)
