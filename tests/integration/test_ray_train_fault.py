"""Fault injection: a worker dies mid-run; Ray Train restarts the group from the last checkpoint and
the private run ends with exactly the ε (and ledger) of an uninterrupted single-process run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig
from cadasg_dist.synthesizer import CADASG
from tests.neighbours import seeded_secrets

pytestmark = pytest.mark.integration

DECLARED = {"group": {"categories": ["big", "mid", "small"]}, "label": {"categories": ["no", "yes"]}}


def _table(n: int = 800, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = np.repeat(["big", "mid", "small"], [500, 200, 100])[rng.permutation(n)]
    x = rng.normal(size=n) + (group == "mid")
    return pd.DataFrame({"group": group, "x": x, "y": 2 * x + rng.normal(size=n),
                         "label": np.where(x + rng.normal(scale=0.5, size=n) > 0.3, "yes", "no")})


def test_killed_worker_resumes_from_checkpoint_with_the_uninterrupted_epsilon(ray_session, tmp_path):
    from cadasg_dist.distributed.trainer import fit_distributed

    # Prepare: a private run (ε = 4) on 2 workers that tolerates one failure; the uninterrupted
    # reference is the engine's own single-process private fit of the same table and config.
    df = _table()
    cfg = CADASGConfig(
        target="label", context=ContextConfig(columns=("group",)),
        model=ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,)),
        train=TrainConfig(epochs=2, batch_size=128, seed=0),
    ).replace(**{"privacy.epsilon": 4.0, "data.columns": DECLARED, "distributed.num_workers": 2,
                 "distributed.max_failures": 1, "distributed.storage_path": str(tmp_path / "ray")})
    # (the driver's releases, the released row count among them, drawn alike in both runs)
    with seeded_secrets(11):
        reference = CADASG(cfg).fit(df)
    marker = tmp_path / "killed"
    # Execute: worker 1 exits at the end of epoch 2, before that epoch's checkpoint.
    with seeded_secrets(11):
        model = fit_distributed(CADASG(cfg), df, fail_at_epoch=2, fail_marker=str(marker))
    # Assert: it died, the group resumed from the epoch-1 checkpoint and finished both epochs.
    assert marker.exists()
    assert model.meta["distributed"]["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in model.history] == [1, 2]
    # Privacy spend is neither lost nor double counted: the same ledger as the uninterrupted run.
    entries = lambda m: [(e.name, e.noise_multiplier, e.sample_rate, e.steps) for e in m.ledger.mechanisms]  # noqa: E731
    assert entries(model) == entries(reference)
    assert model.epsilon == pytest.approx(reference.epsilon, rel=1e-12) and model.epsilon <= 4.0
    assert model.meta["privacy"]["steps_taken"] == reference.meta["privacy"]["steps_taken"]
    assert model.meta["distributed"]["plan"] == {"num_workers": 2, "contexts": 3}  # nothing count-dependent
