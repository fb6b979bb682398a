"""The spend journal's accounting (``distributed.journal``), without Ray: steps begun after a
checkpoint are counted once, the resumed epoch takes only the steps left, and a model whose ledger
lacks a begun step is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig
from cadasg_dist.distributed.journal import StepJournal, StepTrace, lost_steps
from cadasg_dist.distributed.private import ShardPrivacy
from cadasg_dist.distributed.sync import Collectives
from cadasg_dist.distributed.trainer import check_spent
from cadasg_dist.private.budget import FINAL_CACHE, BudgetPlan
from cadasg_dist.synthesizer import CADASG, Prepared

DECLARED = {"group": {"categories": ["a", "b"]}, "label": {"categories": ["no", "yes"]}}


@pytest.fixture(scope="module")
def privacy() -> tuple[Prepared, BudgetPlan]:
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"group": rng.choice(["a", "b"], size=n), "x": rng.normal(size=n),
                       "label": rng.choice(["no", "yes"], size=n)})
    cfg = CADASGConfig(target="label", context=ContextConfig(columns=("group",)),
                       model=ModelConfig(latent_dim=4, hidden=(16,), critic_hidden=(16,), utility_hidden=(8,)),
                       train=TrainConfig(epochs=2, batch_size=60, seed=0),
                       ).replace(**{"privacy.epsilon": 4.0, "data.columns": DECLARED})
    prepared = CADASG(cfg).prepare(df)
    plan = prepared.private.plan
    return prepared, plan


def _shard(prepared, plan) -> ShardPrivacy:
    return ShardPrivacy(prepared.config, prepared.dims, prepared.private.ledger.state_dict(), plan=plan.to_dict(),
                        n_rows=int(plan.n_rows), local_rows=len(prepared.x), world=1, comm=Collectives(1))


def _train_steps(shard: ShardPrivacy) -> int:
    return sum(m.steps for m in shard.dp.ledger.mechanisms if m.name == shard.dp.name)


def test_steps_begun_after_a_checkpoint_are_counted_once_and_shorten_the_resumed_epoch(privacy):
    prepared, plan = privacy
    spe = plan.steps_per_epoch
    xs = torch.from_numpy(prepared.x.astype(np.float32))
    cs = torch.from_numpy(prepared.ids.astype(np.int64))
    # Prepare: a group restored from the epoch-1 checkpoint (its ledger holds spe steps).
    shard = _shard(prepared, plan)
    assert shard.dp.settle_lost({"begun": spe, "final": False}) == spe  # stands for epoch 1's steps
    shard.dp.steps_lost = 0
    # Execute: the journal shows 3 steps of epoch 2 begun before the failure.
    lost = shard.dp.settle_lost({"begun": spe + 3, "final": False})
    again = shard.dp.settle_lost({"begun": spe + 3, "final": False})  # a second read adds nothing
    # Assert: counted once, epoch 2 goes on with the steps left, the report says what was lost.
    assert (lost, again) == (3, 0)
    assert shard.dp.steps_taken == _train_steps(shard) == spe + 3
    assert shard.first_epoch() == 1
    assert len(list(shard.batches(xs, cs))) == spe - 3
    assert shard.dp.report()["steps_lost_to_failures"] == 3
    # A restore writes the counters back (steps_lost survives a second failure).
    restored = _shard(prepared, plan)
    restored.load(shard.state_dict(), _cache(prepared))
    assert restored.dp.steps_taken == spe + 3 and restored.dp.steps_lost == 3


def test_a_lost_final_pass_is_counted_once_and_not_released_again(privacy):
    prepared, plan = privacy
    shard = _shard(prepared, plan)
    shard.dp.settle_lost({"begun": plan.steps, "final": True})
    shard.dp.settle_lost({"begun": plan.steps, "final": True})
    finals = [m for m in shard.dp.ledger.mechanisms if m.name == FINAL_CACHE]
    assert len(finals) == 1 and finals[0].steps == 1
    assert shard.dp.final_released and shard.dp.report()["final_cache_pass_lost"] is True


def test_the_driver_refuses_a_ledger_short_of_the_journal():
    check_spent({"begun": 10, "final": True}, {"steps_taken": 10, "final_released": True})
    with pytest.raises(RuntimeError, match="began 11 DP steps but the final ledger counts 10"):
        check_spent({"begun": 11, "final": False}, {"steps_taken": 10, "final_released": False})
    with pytest.raises(RuntimeError, match="lacks the final cache pass"):
        check_spent({"begun": 10, "final": True}, {"steps_taken": 10, "final_released": False})


def test_journal_is_monotone_and_the_trace_writes_pid_and_steps(tmp_path):
    journal = StepJournal()
    assert [journal.begin(s) for s in (3, 5, 4)] == [3, 5, 5]
    assert lost_steps(journal.state(), 2) == 3 and lost_steps(journal.state(), 7) == 0
    trace = StepTrace(str(tmp_path), 1)
    assert list(trace.steps(iter("abc"))) == ["a", "b", "c"]
    pid = int((tmp_path / "rank1.pid").read_text())
    assert (tmp_path / "rank1.steps").read_text().split() == [str(pid), "1", str(pid), "2", str(pid), "3"]
    assert list(StepTrace(None, 0).steps(iter("ab"))) == ["a", "b"]  # off: nothing written


def _cache(prepared):
    from cadasg_dist.train.loop import new_cache

    return new_cache(prepared.dims, prepared.config)
