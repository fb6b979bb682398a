"""The audits of a trained model (``cadasg_dist.evaluate.audit``) and the ``cadasg audit`` command,
on a one-epoch non-private model of a slice of rwm5yr."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from cadasg_dist.cli import audit as audit_cli
from cadasg_dist.config import CADASGConfig
from cadasg_dist.datasets import load_rwm5yr
from cadasg_dist.errors import CADASGError, InvalidDataError
from cadasg_dist.evaluate.audit import audit_model, distance_attack
from cadasg_dist.synthesizer import CADASG


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    df = load_rwm5yr()
    return df.iloc[:1200].reset_index(drop=True), df.iloc[1200:2000].reset_index(drop=True)


@pytest.fixture(scope="module")
def model_dir(tables: tuple[pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = CADASGConfig.from_dict({"target": "hospvis", "context": {"columns": ["female"]},
                                  "data": {"columns": {"id": {"kind": "identifier"}}},
                                  "train": {"epochs": 1, "batch_size": 200}})
    return CADASG(cfg).fit(tables[0]).save(tmp_path_factory.mktemp("audit") / "model")


def test_audit_of_a_saved_model_gives_aucs_and_a_finite_lower_bound(model_dir: Path, tables) -> None:
    train, holdout = tables
    report = audit_model(model_dir, train, holdout, canaries=40, shadows=2, seed=0)
    assert report.epsilon == math.inf and report.delta is None  # a non-private model says so
    assert 0.0 <= report.distance.auc <= 1.0 and 0.0 <= report.distance.dcr_share <= 1.0
    assert report.distance.members == 800  # every holdout row, as many training rows
    assert report.canary is not None and report.canary.result.canaries == 40
    assert math.isfinite(report.canary.result.epsilon_lower) and report.canary.result.epsilon_lower >= 0.0
    assert report.canary.epsilon_claimed == math.inf
    assert report.canary.copier_epsilon_lower > 0.0  # the audit has power against a copier
    assert report.shadow is not None and report.shadow.shadows == 2
    assert 0.0 <= report.shadow.auc <= 1.0 and 0.0 <= report.shadow.shadow_auc <= 1.0
    json.dumps(report.to_dict(), allow_nan=False)  # plain JSON: inf written as "inf"


def test_distance_attack_catches_a_model_that_releases_its_training_rows(tables) -> None:
    train, holdout = tables
    columns = [c for c in train.columns if c != "id"]
    result = distance_attack(train[columns], train, holdout, columns=columns)
    assert result.auc > 0.95  # every member sits at distance 0 from a released row
    # DCR compares 800 of the 1,200 training rows with the 800 holdout rows: a third of the copies are
    # of rows left out, so the share is about 2/3 + 1/3 x (their chance of a nearer training row).
    assert result.dcr_share > 0.7


def test_audit_refuses_a_holdout_without_the_model_columns(model_dir: Path, tables) -> None:
    train, holdout = tables
    with pytest.raises(InvalidDataError, match="holdout table lacks the model's column"):
        audit_model(model_dir, train, holdout.drop(columns=["age"]))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cadasg")
    audit_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_audit_command_prints_and_writes_the_result(model_dir: Path, tables, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    train, holdout = tables
    train.to_csv(tmp_path / "train.csv", index=False)
    holdout.to_parquet(tmp_path / "holdout.parquet")
    out = tmp_path / "reports" / "audit.json"
    args = _parse(["audit", str(model_dir), "--train", str(tmp_path / "train.csv"),
                   "--holdout", str(tmp_path / "holdout.parquet"), "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "NOT PRIVATE" in printed and "distance attack: AUC" in printed and "not privacy-protected" in printed
    saved = json.loads(out.read_text())
    assert saved["epsilon"] == "inf" and saved["canary"] is None and saved["shadow"] is None
    assert 0.0 <= saved["distance"]["auc"] <= 1.0


@pytest.mark.parametrize("flag, value", [("--shadows", "1"), ("--canaries", "-1")])
def test_audit_command_refuses_bad_counts_before_reading_anything(flag: str, value: str) -> None:
    args = _parse(["audit", "no-such-model", "--train", "t.csv", "--holdout", "h.csv", flag, value])
    with pytest.raises(CADASGError, match=flag):
        args.func(args)
