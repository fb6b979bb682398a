"""The one training loop: the budget guard is asked before every step and stops the run for good,
hidden metrics never reach a report, ``after_step`` runs after each step, and a private fit trains
under the plan its preparation made (it plans nothing itself)."""

from __future__ import annotations

import numpy as np
import pytest

from cadasg_dist.synthesizer import CADASG
from cadasg_dist.train.loop import TrainingLoop, as_tensors, new_cache, shuffled_batches
from cadasg_dist.train.step import TrainState


class Allowance:
    """A budget guard that allows ``steps`` steps, then stops with a reason."""

    def __init__(self, steps: int) -> None:
        self.left, self.asked, self.stop_reason = steps, 0, None

    def allows_step(self) -> bool:
        self.asked += 1
        if self.left > 0 and self.stop_reason is None:
            self.left -= 1
            return True
        self.stop_reason = "out of budget"
        return False

    def epsilon(self) -> float:
        return 1.0


@pytest.fixture(scope="module")
def prepared(mixed_table, tiny_config):
    return CADASG(tiny_config).prepare(mixed_table)


def _loop(prepared, **kwargs) -> tuple[TrainingLoop, object]:
    cfg = prepared.config
    state = TrainState.create(prepared.dims, cfg)
    xs, cs = as_tensors(prepared.x, prepared.ids)
    rng = np.random.default_rng(0)
    loop = TrainingLoop(cfg, state, new_cache(prepared.dims, cfg), **kwargs)
    return loop, lambda: shuffled_batches(xs, cs, cfg.train.batch_size, rng)


def test_the_guard_stops_the_run_mid_epoch_for_good(prepared):
    steps_per_epoch = -(-len(prepared.x) // prepared.config.train.batch_size)  # 600 rows / 128: 5
    guard = Allowance(steps_per_epoch + 2)
    loop, batches = _loop(prepared, guard=guard)
    reports = list(loop.epochs(batches, 10))
    assert [r.epoch for r in reports] == [1, 2] and loop.stopped  # a partial second epoch, then no third
    assert loop.state.step == steps_per_epoch + 2 and guard.asked == steps_per_epoch + 3
    assert reports[-1].epsilon == 1.0 and [h["epoch"] for h in loop.state.history] == [1, 2]


def test_hidden_metrics_never_reach_a_report_and_after_step_runs_each_step(prepared):
    calls: list[int] = []
    loop, batches = _loop(prepared, hidden=("loss_vae", "loss_critic"))
    loop.after_step = lambda: calls.append(loop.state.step)
    reports = list(loop.epochs(batches, 1))
    assert "loss_vae" not in reports[0].metrics and "loss_critic" not in reports[0].metrics
    assert "loss_cov" in reports[0].metrics and calls == list(range(1, loop.state.step + 1))


def test_a_private_fit_trains_under_the_plan_its_preparation_made(mixed_table, tiny_config, monkeypatch):
    from cadasg_dist.private import fit as private_fit

    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "data.columns": {
        "group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]},
        "score": {"min": -10, "max": 10}}})
    model = CADASG(cfg)
    prepared = model.prepare(mixed_table)

    def replan(*args, **kwargs):
        raise AssertionError("fit_private planned the budget again")

    monkeypatch.setattr(private_fit, "plan_budget", replan)
    model.fit_prepared(prepared)
    plan = prepared.private.plan
    report = model.meta["privacy"]
    assert report["noise_multipliers"]["train_step"] == plan.step_sigma and report["steps_planned"] == plan.steps
    assert model.ledger.epsilon() <= 4.0
