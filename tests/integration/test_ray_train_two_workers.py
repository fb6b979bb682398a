"""One real 2-worker Ray Train run on a small table read from a directory of Parquet parts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig
from cadasg_dist.context import ContextCache
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.train.fit import final_cache_pass

pytestmark = pytest.mark.integration


def _table(n: int = 800, seed: int = 0) -> pd.DataFrame:
    """Continuous columns without ties (their encoding has no randomness), a context of 500/200/100
    rows (the largest must be split across two workers) and a binary target."""
    rng = np.random.default_rng(seed)
    group = np.repeat(["big", "mid", "small"], [500, 200, 100])[rng.permutation(n)]
    x = rng.normal(size=n) + (group == "mid")
    return pd.DataFrame({"group": group, "x": x, "y": 2 * x + rng.normal(size=n),
                         "label": np.where(x + rng.normal(scale=0.5, size=n) > 0.3, "yes", "no")})


def test_two_workers_stay_in_sync_and_their_merged_cache_is_the_single_worker_cache(ray_session, tmp_path):
    from cadasg_dist.distributed.trainer import fit_distributed

    # Prepare: the table as three Parquet parts; 2 workers, caches merged every 3 steps, no noise.
    df = _table()
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, start in enumerate(range(0, len(df), 300)):
        df.iloc[start:start + 300].to_parquet(parts / f"part-{i}.parquet", index=False)
    cfg = CADASGConfig(
        target="label", context=ContextConfig(columns=("group",)),
        model=ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,)),
        train=TrainConfig(epochs=2, batch_size=128, seed=0),
    ).replace(**{"distributed.num_workers": 2, "distributed.merge_every": 3,
                 "distributed.storage_path": str(tmp_path / "ray")})
    plans: list[str] = []
    # Execute
    model = fit_distributed(CADASG(cfg), parts, on_plan=plans.append)
    # Assert: the plan split "big" (500 rows > the even share of 400) and kept the others whole.
    meta = model.meta["distributed"]
    assert meta["workers"] == 2 and meta["plan"]["num_workers"] == 2
    assert "split group=big (500 rows)" in plans[0]
    assert len(model.history) == 2
    # Gradients were all-reduced every step: both workers hold the same parameters.
    fingerprints = meta["worker_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0]["params"] == pytest.approx(fingerprints[1]["params"], rel=1e-9)
    assert meta["bytes_per_step"]["gradients"] > 0 and meta["bytes_per_step"]["cache"] > 0
    # The merged final cache equals the single-process final pass over the whole table.
    xs = torch.from_numpy(model.transformer.encode(df, seed=0).astype(np.float32))
    cs = torch.from_numpy(model.extractor.ids(df))
    single = ContextCache(model.cache.n_contexts, xs.shape[1], cfg.model.latent_dim, cfg.cache, model.cache.strata)
    final_cache_pass(cfg, SimpleNamespace(nets=model.nets, generator=torch.Generator()), single, xs, cs)
    for name, value in single.stats.state_dict().items():
        torch.testing.assert_close(getattr(model.cache.stats, name), value, rtol=1e-6, atol=1e-6)
    rows = model.sample(300, seed=0)
    assert set(rows["group"]) <= {"big", "mid", "small"} and rows["x"].notna().all()
