"""Progress lines (an ETA, withheld DP losses) and the full loss history through save and load."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from cadasg_dist.train.progress import WITHHELD, duration_text, epoch_line, eta_text


@dataclass
class Report:
    epoch: int
    epochs: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    epsilon: float | None = None


def test_the_line_has_an_eta_and_says_a_private_runs_losses_are_withheld():
    assert eta_text(Report(2, 10, 20.0)) == "ETA 1m20s" and eta_text(Report(10, 10, 99.0)) == "done"
    assert (duration_text(42.4), duration_text(187), duration_text(7500)) == ("42s", "3m07s", "2h05m")
    private = epoch_line(Report(3, 10, 6.0, {"loss_cov": 0.5, "loss_utility": 0.25, "lambda_kl": 1.0}, epsilon=0.7))
    assert f"critic, vae {WITHHELD}" in private and "cov 0.500" in private and "ETA 14s" in private
    assert "+0.000" not in private and "ε=0.70" in private
    public = epoch_line(Report(1, 2, 1.0, {"loss_critic": -0.25, "loss_vae": 3.0}))
    assert "critic -0.250 vae 3.000" in public and WITHHELD not in public and "cov nan" in public


def test_the_whole_loss_history_survives_save_and_load_and_old_artifacts_still_load(tmp_path, tiny_model):
    from cadasg_dist.synthesizer import CADASG

    assert len(tiny_model.history) == 2
    path = tiny_model.save(tmp_path / "m")
    loaded = CADASG.load(path)
    frame = loaded.loss_history()
    assert list(frame["epoch"]) == [1, 2] and len(frame) == len(tiny_model.history)
    assert math.isclose(frame["loss_vae"].iloc[0], tiny_model.history[0]["loss_vae"])
    assert frame.equals(tiny_model.loss_history())
    # an artifact written before the full history kept only its last epoch: it loads with that one
    old = CADASG.load(path)
    old.history = old.history[-1:]
    meta = json.loads(old.save(tmp_path / "old").joinpath("meta.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [2]
    assert list(CADASG.load(tmp_path / "old").loss_history()["epoch"]) == [2]
    assert list(CADASG().loss_history().columns) == ["epoch"]
