"""The trial's pieces without Ray: rounds, scores, and `cadasg tune` argument errors."""

from __future__ import annotations

import argparse
import math

import pytest

from cadasg_dist.cli import tune as tune_command
from cadasg_dist.errors import CADASGError, ConfigError
from cadasg_dist.tuning.front import PickError
from cadasg_dist.tuning.trainable import TrialJob, _train_local, _train_private, round_ends, scalar_score


@pytest.mark.parametrize("epochs, rounds, expected", [(10, 3, [3, 7, 10]), (2, 3, [1, 2]), (1, 2, [1]),
                                                       (150, 1, [150])])
def test_round_ends(epochs, rounds, expected):
    assert round_ends(epochs, rounds) == expected


def test_scalar_score_caps_utility_and_charges_epsilon():
    assert scalar_score(0.8, 1.2, None, 0.05) == pytest.approx(0.9)
    assert scalar_score(0.8, None, math.inf, 0.05) == pytest.approx(0.4)
    assert scalar_score(0.8, 0.6, math.e, 0.05) == pytest.approx(0.7 - 0.05)


def test_a_local_trial_is_scored_after_every_round(mixed_table, tiny_config):
    # Prepare
    cfg = tiny_config.replace(**{"train.epochs": 3})
    job = TrialJob(base=cfg, train=mixed_table.iloc[:400], validation=mixed_table.iloc[400:], rounds=3,
                   privacy_weight=0.05)
    reports = []

    # Execute
    model = _train_local(cfg, job, round_ends(3, 3), reports.append)

    # Assert: rounds 1 and 2 are reported on the way, the caller scores the last
    assert [(r["round"], r["epochs"]) for r in reports] == [(1, 1), (2, 2)]
    assert all(0 <= r["fidelity"] <= 1 and r["utility"] >= 0 and "epsilon" not in r for r in reports)
    assert len(model.history) == 3


def test_a_private_trial_is_scored_after_every_round_with_the_epsilon_spent_so_far(mixed_table, tiny_config):
    # Prepare: declared domains so the trial spends its budget on training only
    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]},
                "count": {"min": 0, "max": 20}, "amount": {"min": 0, "max": 5000}, "score": {"min": -10, "max": 10},
                "level": {"min": 1, "max": 3}, "when": {"min": 1.5e9, "max": 1.7e9}}
    cfg = tiny_config.replace(**{"train.epochs": 3, "privacy.epsilon": 4.0, "data.columns": declared})
    job = TrialJob(base=cfg, train=mixed_table.iloc[:400], validation=mixed_table.iloc[400:], rounds=3,
                   privacy_weight=0.05)
    reports = []

    # Execute
    model = _train_private(cfg, job, round_ends(3, 3), reports.append)

    # Assert: ASHA sees rounds 1 and 2, each charged the epsilon spent by then, below the final spend
    assert [(r["round"], r["epochs"]) for r in reports] == [(1, 1), (2, 2)]
    assert all(0 <= r["fidelity"] <= 1 and r["utility"] >= 0 for r in reports)
    spent = [r["epsilon"] for r in reports] + [model.ledger.epsilon()]
    assert spent == sorted(spent) and spent[0] < spent[-1] <= 4.0
    assert reports[0]["score"] == pytest.approx(scalar_score(reports[0]["fidelity"], reports[0]["utility"],
                                                             reports[0]["epsilon"], 0.05))
    assert len(model.history) == 3 and model.meta["private"] is True


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cadasg")
    tune_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["tune", *argv])


def test_cli_needs_a_target(tmp_path):
    with pytest.raises(CADASGError, match="--target is required"):
        tune_command.build_job(parse("t.csv", "--trials", "2", "--out", str(tmp_path)))


def test_cli_refuses_a_bad_pick_before_searching(tmp_path):
    with pytest.raises(PickError, match="unknown metric 'speed'"):
        tune_command.build_job(parse("t.csv", "--target", "y", "--trials", "2", "--pick", "speed@epsilon<=3",
                                     "--out", str(tmp_path)))


def test_cli_flags_pin_keys_and_epsilon_caps_the_space(tmp_path, mixed_table):
    mixed_table.to_csv(tmp_path / "t.csv", index=False)

    job = tune_command.build_job(parse(str(tmp_path / "t.csv"), "--target", "label", "--context", "group",
                                       "--trials", "2", "--epochs", "3", "--set", "loss.cov=2.0",
                                       "--epsilon", "2", "--out", str(tmp_path / "o")))

    space = job.request.space
    assert "train.epochs" not in space.params and "loss.cov" not in space.params
    assert job.request.config.train.epochs == 3 and job.request.config.loss.cov == 2.0
    assert space.params["privacy.epsilon"].values == (1.0, 2.0)
    assert job.request.objectives == {"fidelity": "max", "utility": "max", "epsilon": "min"}


def test_cli_without_epsilon_searches_nothing_private(tmp_path, mixed_table):
    mixed_table.to_csv(tmp_path / "t.csv", index=False)

    job = tune_command.build_job(parse(str(tmp_path / "t.csv"), "--target", "label", "--trials", "2",
                                       "--out", str(tmp_path / "o")))

    assert not job.request.config.private
    assert not any(k.startswith("privacy.") for k in job.request.space.params)
    assert "epsilon" not in job.request.objectives


def test_cli_refuses_a_space_with_nothing_left_to_search(tmp_path, mixed_table):
    mixed_table.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.yaml").write_text("space:\n  loss.cov: {choice: [1.0, 2.0]}\n")

    with pytest.raises(ConfigError, match="nothing to search"):
        tune_command.build_job(parse(str(tmp_path / "t.csv"), "--target", "label", "--trials", "2",
                                     "--space", str(tmp_path / "s.yaml"), "--set", "loss.cov=3",
                                     "--out", str(tmp_path / "o")))


def test_saved_statuses_read_the_newest_experiment_state(tmp_path):
    """What a resume restarts is what Tune saved, not the trial's status in memory (an interrupt
    writes the state, then marks the trials it stops TERMINATED)."""
    import json

    from cadasg_dist.tuning.search import saved_statuses

    def state(**statuses):
        return json.dumps({"trial_data": [[json.dumps({"trial_id": t, "status": s}), "{}"]
                                          for t, s in statuses.items()]})

    assert saved_statuses(tmp_path) == {}
    (tmp_path / "experiment_state-2026-01-01_10-00-00.json").write_text(state(a="RUNNING", b="PENDING"))
    (tmp_path / "experiment_state-2026-01-01_10-00-09.json").write_text(state(a="TERMINATED", b="RUNNING"))
    assert saved_statuses(tmp_path) == {"a": "TERMINATED", "b": "RUNNING"}
