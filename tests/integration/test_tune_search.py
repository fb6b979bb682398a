"""`cadasg tune` end to end on Ray Tune: a private 4-trial search with tiny epochs, interrupted after
two trials (Ctrl+C), resumed by running the same command, then the front and the pick."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cadasg_dist.cli import tune as tune_command
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.tuning.front import OBJECTIVES, dominates, parse_pick, select
from cadasg_dist.tuning.search import run_search
from cadasg_dist.tuning.splits import split_for_tuning

pytestmark = pytest.mark.integration
ray_tune = pytest.importorskip("ray.tune")
pytest.importorskip("optuna")

CONFIG = {
    "model": {"latent_dim": 4, "hidden": [32], "critic_hidden": [32], "utility_hidden": [16]},
    "train": {"epochs": 2, "batch_size": 64},
    # A private run reads no category set or bound from the data: they are declared.
    "data": {"columns": {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]},
                         "count": {"min": 0, "max": 40}, "amount": {"min": 0, "max": 2000},
                         "score": {"min": -10, "max": 10}, "level": {"min": 1, "max": 3}}},
}
SPACE = {
    "space": {"loss.cov": {"loguniform": [0.25, 4.0]}, "loss.adaptive": {"choice": [True, False]},
              "privacy.epsilon": {"choice": [1.0, 3.0]}},
    "search": {"rounds": 2, "tune_fraction": 0.5, "validation_fraction": 0.3, "max_concurrent_trials": 2},
}


class InterruptOnce(ray_tune.Callback):
    """Presses Ctrl+C once ``after`` trials have completed; the marker file arms it (Tune keeps its
    callbacks in the experiment state, so the resumed run carries an unarmed copy)."""

    def __init__(self, marker: Path, after: int) -> None:
        self.marker, self.after, self.done = marker, after, 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        if self.done >= self.after and self.marker.exists():
            self.marker.unlink()
            os.kill(os.getpid(), signal.SIGINT)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cadasg")
    tune_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["tune", *argv])


@pytest.fixture(scope="module")
def tuned(ray_session, tmp_path_factory, mixed_table):
    root = tmp_path_factory.mktemp("tune")
    table = mixed_table.drop(columns=["when"])
    table.to_csv(root / "table.csv", index=False)
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    out = root / "search"
    args = parse([str(root / "table.csv"), "--target", "label", "--context", "group", "--trials", "4",
                  "--epsilon", "3", "--config", str(root / "config.yaml"), "--space", str(root / "space.yaml"),
                  "--pick", "utility@epsilon<=3", "--out", str(out)])
    job = tune_command.build_job(args)
    (root / "armed").touch()
    first = run_search(job.request, job.frame, callbacks=[InterruptOnce(root / "armed", after=2)])
    code = tune_command.run(args)  # the same command again: resumes, writes the front, picks
    front = json.loads((out / "front.json").read_text())
    return SimpleNamespace(first=first, code=code, out=out, front=front, table=table, job=job)


def test_interrupted_search_resumes_where_it_stopped(tuned):
    assert tuned.first.interrupted
    # finished before the interrupt: trained to the end, or stopped by ASHA (private trials too)
    done_first = {r.trial_id: r.metrics for r in tuned.first.records if r.status in ("completed", "stopped")}
    assert len(done_first) >= 2
    assert tuned.code == 0
    trials = {t["trial_id"]: t for t in tuned.front["trials"]}
    assert len(trials) == 4 and not tuned.front["interrupted"]
    assert all(t["status"] in ("completed", "stopped") for t in trials.values())
    for trial_id, metrics in done_first.items():  # kept, not trained again
        assert trials[trial_id]["metrics"]["fidelity"] == metrics["fidelity"]


def test_front_is_written_and_non_dominated(tuned):
    assert (tuned.out / "front.md").read_text().startswith("# Tuning front")
    assert (tuned.out / "front.png").stat().st_size > 0
    completed = [t for t in tuned.front["trials"] if t["status"] == "completed"]
    objectives = tuned.front["objectives"]
    assert objectives == {k: OBJECTIVES[k] for k in ("fidelity", "utility", "epsilon")}
    members = [t for t in completed if t["trial_id"] in tuned.front["front"]]
    assert members
    for m in members:
        assert not any(dominates(o["metrics"], m["metrics"], objectives) for o in completed)
        assert m["metrics"]["epsilon"] <= 3.0 + 1e-9
    for o in completed:  # and everything off the front is dominated by a member
        if o["trial_id"] not in tuned.front["front"]:
            assert any(dominates(m["metrics"], o["metrics"], objectives) for m in members)
    for m in members:
        folder = tuned.out / "front" / m["trial_id"]
        assert yaml.safe_load((folder / "config.yaml").read_text())["privacy"]["epsilon"] <= 3.0
        rows = CADASG.load(folder / "model").sample(20, seed=0)
        assert list(rows.columns) == list(tuned.table.columns)


def test_pick_trains_on_the_final_rows_and_records_how(tuned):
    model = CADASG.load(tuned.out / "picked")
    record = model.meta["tuning"]
    members = [SimpleNamespace(trial_id=t["trial_id"], values=t["metrics"]) for t in tuned.front["trials"]
               if t["trial_id"] in tuned.front["front"]]
    assert record["trial"] == select(members, parse_pick("utility@epsilon<=3")).trial_id
    assert record["route"] == "holdout-split" and "NOT protected" in record["statement"]
    settings = tuned.job.request.space.settings
    final = split_for_tuning(tuned.table, tune_fraction=settings.tune_fraction,
                             validation_fraction=settings.validation_fraction, seed=0).final
    assert record["final_rows"] == len(final)
    count = next(m for m in model.ledger.mechanisms if m.name == "preprocess/count")  # a private fit: released
    assert abs(model.meta["training_rows"] - len(final)) < 5 * count.noise_multiplier * count.sensitivity
    assert model.ledger.private and 0 < model.ledger.epsilon() <= 3.0
