"""Unit tests of the ``evaluate`` subcommand (argparse registration and run())."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.cli.evaluate import add_parser, load_model_files, run
from cadasg_dist.data.schema import infer_schema
from cadasg_dist.errors import ArtifactError, CADASGError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cadasg")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)

    def table(n: int) -> pd.DataFrame:
        x = rng.normal(size=n)
        return pd.DataFrame({"x": x, "grp": rng.choice(["a", "b"], size=n),
                             "y": np.where(x + rng.normal(size=n) > 0, "yes", "no")})

    paths = {"real": tmp_path / "holdout.csv", "train": tmp_path / "train.csv", "syn": tmp_path / "syn.parquet"}
    table(300).to_csv(paths["real"], index=False)
    train = table(300)
    train.to_csv(paths["train"], index=False)
    table(300).to_parquet(paths["syn"], index=False)
    model = tmp_path / "model"
    model.mkdir()
    (model / "schema.json").write_text(json.dumps(infer_schema(train).to_dict()))
    (model / "ledger.json").write_text(json.dumps({"epsilon": "inf", "delta": None}))
    paths["model"] = model
    paths["out"] = tmp_path / "report"
    return paths


def test_run_writes_report_and_prints_summary(files, capsys) -> None:
    args = parse(["evaluate", "--real", str(files["real"]), "--synthetic", str(files["syn"]), "--train",
                  str(files["train"]), "--model", str(files["model"]), "--target", "y", "--context", "grp",
                  "--out", str(files["out"]), "--seed", "3"])
    assert args.func is run
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "column shape" in out and "not private" in out and str(files["out"] / "report.html") in out
    metrics = json.loads((files["out"] / "metrics.json").read_text())
    assert metrics["seed"] == 3 and metrics["context"] == ["grp"] and metrics["privacy"]["epsilon"] == "inf"


def test_missing_file_is_a_user_error(files) -> None:
    args = parse(["evaluate", "--real", str(files["real"].with_name("nope.csv")), "--synthetic", str(files["syn"]),
                  "--out", str(files["out"])])
    with pytest.raises(CADASGError, match="nope.csv"):
        run(args)


def test_mismatched_schema_names_the_columns(files, tmp_path: Path) -> None:
    syn = pd.read_parquet(files["syn"]).rename(columns={"x": "x2"})
    bad = tmp_path / "bad.csv"
    syn.to_csv(bad, index=False)
    args = parse(["evaluate", "--real", str(files["real"]), "--synthetic", str(bad), "--out", str(files["out"])])
    with pytest.raises(CADASGError) as err:
        run(args)
    assert "'x'" in str(err.value) and "'x2'" in str(err.value)
    assert not files["out"].exists()


def test_bad_model_directory_is_an_artifact_error(files, tmp_path: Path) -> None:
    base = ["evaluate", "--real", str(files["real"]), "--synthetic", str(files["syn"]), "--out", str(files["out"])]
    with pytest.raises(ArtifactError, match="not found"):
        run(parse(base + ["--model", str(tmp_path / "missing")]))
    (files["model"] / "ledger.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="ledger.json"):
        run(parse(base + ["--model", str(files["model"])]))


def test_saved_ledger_state_gives_epsilon(files) -> None:
    privacy = pytest.importorskip("cadasg_dist.privacy")
    ledger = privacy.PrivacyLedger(delta=1e-5)
    ledger.record(name="dpsgd", noise_multiplier=1.1, sample_rate=0.01, steps=500)
    (files["model"] / "ledger.json").write_text(json.dumps(ledger.state_dict()))
    schema, summary = load_model_files(files["model"])
    assert schema is not None and summary == {"epsilon": pytest.approx(ledger.epsilon()), "delta": 1e-5}
    (files["model"] / "ledger.json").write_text(json.dumps(privacy.PrivacyLedger.non_private().state_dict()))
    assert load_model_files(files["model"])[1] == {"epsilon": float("inf"), "delta": None}


def test_model_brings_its_target_and_context(tmp_path, capsys, tiny_model, mixed_table) -> None:
    model = tiny_model.save(tmp_path / "m")
    real, syn = tmp_path / "real.csv", tmp_path / "syn.csv"
    mixed_table.head(300).to_csv(real, index=False)
    tiny_model.sample(300, seed=1).to_csv(syn, index=False)
    assert run(parse(["evaluate", "--real", str(real), "--synthetic", str(syn), "--model", str(model),
                      "--out", str(tmp_path / "report")])) == 0
    out = capsys.readouterr().out
    assert "utility " in out and "worst context" in out and "not measured" not in out
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["context"] == ["group"] and metrics["target"] == "label"
    # without a model or --target the summary says why there is no utility line
    assert run(parse(["evaluate", "--real", str(real), "--synthetic", str(syn), "--out", str(tmp_path / "r2")])) == 0
    assert "utility: not measured (no target" in capsys.readouterr().out
