"""Shard plan: balance, every row planned and routed exactly once, contexts whole where possible."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.distributed.plan import DEFAULT_SLACK, ShardPlan, make_plan, row_uniforms
from cadasg_dist.errors import ConfigError


def _bound(counts, workers, slack=DEFAULT_SLACK):
    return math.floor(math.ceil(sum(counts) / workers) * (1 + slack))


def test_small_contexts_stay_whole_and_balanced():
    # Prepare: four contexts that pack exactly into two workers of 100 rows.
    counts = [60, 40, 50, 50]
    # Execute
    plan = make_plan(counts, 2)
    # Assert: loads 100/100, nothing split, each context on one worker.
    assert sorted(plan.loads) == [100, 100]
    assert plan.split_contexts == ()
    assert all(len(parts) == 1 for parts in plan.pieces)


def test_a_context_larger_than_a_share_is_split_and_others_stay_whole():
    counts = [900, 50, 30, 20]  # total 1000: the even share is 500, context 0 cannot fit
    plan = make_plan(counts, 2)
    assert plan.split_contexts == (0,)
    assert sorted(p.rows for p in plan.pieces[0]) == [400, 500]
    assert max(plan.loads) <= _bound(counts, 2)
    assert sum(plan.loads) == 1000
    assert all(len(plan.pieces[c]) == 1 for c in (1, 2, 3))


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_tables_every_row_planned_once_within_the_bound(workers, seed):
    rng = np.random.default_rng(seed)
    counts = rng.zipf(1.6, size=40).clip(max=5000)  # heavy-tailed context sizes
    plan = make_plan(counts, workers)
    for c, parts in enumerate(plan.pieces):
        assert sum(p.rows for p in parts) == counts[c]
        assert len({p.worker for p in parts}) == len(parts)  # no worker holds two pieces of one context
    assert sum(plan.loads) == counts.sum()
    assert max(plan.loads) <= _bound(counts, workers)
    # Every piece but a context's last fills a worker up to the even share, and a full worker takes no
    # more pieces: splitting adds at most N - 1 pieces in all.
    assert sum(len(plan.pieces[c]) - 1 for c in plan.split_contexts) <= workers - 1


def test_only_contexts_too_large_for_the_slack_are_split():
    counts = [30, 30, 30, 30, 30, 30, 21]  # 201 rows on 2 workers: share 101, bound 106
    plan = make_plan(counts, 2)
    assert max(plan.loads) <= 106
    whole = [c for c, parts in enumerate(plan.pieces) if len(parts) == 1]
    assert len(whole) >= len(counts) - 1  # at most one split, to balance the remainder


def test_routing_assigns_every_row_to_exactly_one_worker_as_planned():
    rng = np.random.default_rng(0)
    counts = np.array([20_000, 3_000, 2_000, 500, 0, 10])
    plan = make_plan(counts, 3)
    ids = np.repeat(np.arange(len(counts)), counts)
    u = rng.random(len(ids))
    worker = plan.route(ids, u)
    assert worker.shape == ids.shape and worker.min() >= 0 and worker.max() < 3
    # Whole contexts go to their planned worker.
    for c, parts in enumerate(plan.pieces):
        if len(parts) == 1:
            assert (worker[ids == c] == parts[0].worker).all()
    # Split pieces get their planned share up to binomial noise (4 sigma).
    for c in plan.split_contexts:
        for p in plan.pieces[c]:
            got = int(((ids == c) & (worker == p.worker)).sum())
            share = p.rows / counts[c]
            assert abs(got - p.rows) <= 4 * math.sqrt(counts[c] * share * (1 - share)) + 1
    loads = np.bincount(worker, minlength=3)
    assert loads.sum() == len(ids)
    assert loads.max() / (len(ids) / 3) < 1.1


def test_row_uniforms_depend_on_the_row_only():
    df = pd.DataFrame({"a": ["x", "y", "z", "x"], "b": [1.0, 2.0, np.nan, 1.0]})
    u = row_uniforms(df)
    assert ((u >= 0) & (u < 1)).all()
    assert u[0] == u[3]  # equal rows, equal numbers
    # Any block layout gives the same numbers: routing agrees across independent readers.
    assert np.array_equal(np.r_[row_uniforms(df.iloc[:2]), row_uniforms(df.iloc[2:])], u)


def test_plan_round_trips_and_describes_itself():
    plan = make_plan([900, 50, 30, 20], 2)
    assert ShardPlan.from_dict(plan.to_dict()) == plan
    text = plan.describe(["a=1", "a=2", "a=3", "a=4"])
    assert "split a=1 (900 rows)" in text and "worker 1" in text
    # Context 0 fills worker 0 to the even share (500) and sends 400 rows to worker 1, which then
    # takes the three small contexts whole.
    assert plan.public_summary() == {"num_workers": 2, "contexts": 4}  # which contexts split depends on counts
    assert "rows" not in plan.describe_shape() and "2 workers" in plan.describe_shape()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="num_workers"):
        make_plan([10], 0)
    with pytest.raises(ConfigError, match="fewer workers"):
        make_plan([1, 1], 3)
    with pytest.raises(ConfigError, match=">= 0"):
        make_plan([5, -1], 1)
