"""The per-worker loop in Ray Train's local mode (``ScalingConfig(num_workers=0)``, in this process),
and exact resumption from a checkpoint payload (no Ray actors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadasg_dist.distributed.plan import make_plan
from cadasg_dist.distributed.worker import STATE_FILE, WorkerConfig, WorkerRun
from cadasg_dist.synthesizer import CADASG

pytestmark = pytest.mark.integration


def test_local_mode_trains_and_returns_a_model(ray_session, mixed_table, tiny_config):
    from cadasg_dist.distributed.trainer import fit_distributed

    plans: list[str] = []
    model = fit_distributed(CADASG(tiny_config), mixed_table, local_mode=True, on_plan=plans.append)
    meta = model.meta["distributed"]
    assert meta["workers"] == 1 and meta["plan"]["num_workers"] == 1
    assert "worker 0: 600 rows, 3 whole contexts" in plans[0]
    assert [h["epoch"] for h in model.history] == [1, 2]
    assert model.meta["training_rows"] == len(mixed_table)
    rows = model.sample(200, seed=1)
    assert list(rows.columns) == list(mixed_table.columns)
    assert set(rows["group"]) <= {"a", "b", "rare"} and set(rows["label"]) <= {"yes", "no"}
    assert float(model.cache.counts().sum()) == pytest.approx(len(mixed_table))  # final pass, no noise


def _worker_config(table, cfg) -> tuple[WorkerConfig, torch.Tensor, torch.Tensor]:
    model = CADASG(cfg)
    prepared = model.prepare(table)
    x, ids, dims = prepared.x, prepared.ids, prepared.dims
    plan = make_plan(np.bincount(ids, minlength=dims.contexts), 1)
    wc = WorkerConfig(model.config, model.schema, model.transformer.to_dict(), model.extractor.to_dict(), dims,
                      plan, len(x))
    return wc, torch.from_numpy(x.astype(np.float32)), torch.from_numpy(ids.astype(np.int64))


def test_a_restored_worker_continues_exactly_like_an_uninterrupted_one(tmp_path, mixed_table, tiny_config):
    from ray.train import Checkpoint

    # Prepare: one epoch, then a checkpoint payload written as rank 0 writes it.
    wc, xs, cs = _worker_config(mixed_table, tiny_config.replace(**{"distributed.merge_every": 3}))
    straight = WorkerRun(wc, 0, 1, local_rows=len(xs))
    straight.epoch(xs, cs)
    torch.save(straight.payload(1), tmp_path / STATE_FILE)
    # Execute: a fresh worker restores it; both run the next epoch.
    resumed = WorkerRun(wc, 0, 1, local_rows=len(xs))
    start = resumed.restore(Checkpoint.from_directory(str(tmp_path)))
    a, b = straight.epoch(xs, cs), resumed.epoch(xs, cs)
    # Assert: same epoch, same metrics, same weights, optimizers, cache and RNG: nothing lost.
    assert start == 1 and a == b
    assert resumed.history == straight.history
    for p, q in zip(straight.state.nets.parameters(), resumed.state.nets.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(straight.cache.merged.sxx, resumed.cache.merged.sxx)
    assert straight.state.opt_generator.state_dict()["state"][0]["step"] == resumed.state.opt_generator.state_dict()[
        "state"][0]["step"]
    assert torch.equal(straight.state.generator.get_state(), resumed.state.generator.get_state())
