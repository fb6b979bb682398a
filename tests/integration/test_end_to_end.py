"""End to end on a real table (the bundled German health panel): train briefly, sample, evaluate."""

import numpy as np
import pytest

from cadasg_dist.cli.demo import binarize_target, demo_config, split
from cadasg_dist.evaluate import evaluate
from cadasg_dist.synthesizer import CADASG


@pytest.mark.slow
def test_short_training_on_rwm5yr_keeps_contexts_classes_and_utility(rwm5yr, tmp_path):
    train, holdout = split(rwm5yr, seed=0)
    cfg = demo_config(epochs=4).replace(**{"model.hidden": [64, 64], "model.critic_hidden": [64, 64]})
    model = CADASG(cfg).fit(train)
    synthetic = CADASG.load(model.save(tmp_path / "m")).sample(len(train), seed=0)

    assert list(synthetic.columns) == [c for c in train.columns if c != "id"]
    for i in range(1, 5):  # the one-hot copies are declared derived: they agree with edlevel in every row
        assert (synthetic[f"edlevel{i}"] == (synthetic["edlevel"] == i).astype(int)).all()
    # contexts at their real shares; the rare positive class (8.5%) at its real rate
    real_share = train.groupby(["year", "female"]).size() / len(train)
    syn_share = synthetic.groupby(["year", "female"]).size() / len(synthetic)
    assert (real_share - syn_share).abs().max() < 1e-3
    real_rate, syn_rate = (train["hospvis"] > 0).mean(), (synthetic["hospvis"] > 0).mean()
    assert abs(syn_rate - real_rate) / real_rate < 0.10
    # every context can be sampled directly, including a single (year, female) cell
    cell = model.sample(200, context={"year": 1984, "female": 1}, seed=1)
    assert set(zip(cell["year"], cell["female"])) == {(1984, 1)}

    result = evaluate(binarize_target(holdout), binarize_target(synthetic), target="hospvis",
                      context=["year", "female"], train=binarize_target(train), seed=0)
    assert result.fidelity.column_shape > 0.90
    assert result.fidelity.pair_trend > 0.85
    assert result.utility.ratio > 0.85
    assert result.privacy.exact_match_rate < 0.05
    assert np.isfinite(result.per_context.min)
