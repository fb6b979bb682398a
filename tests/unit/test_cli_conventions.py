"""One convention across the subcommands: --num-workers 0 in process, --force to overwrite a model,
--target checked before anything heavy runs, one --address, --version, defaults in help, and
``evaluate --model`` reading the model's target and context."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.cli import main, make_parser

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "2", "--set", "model.hidden=[16]", "--set", "model.critic_hidden=[16]",
        "--set", "model.utility_hidden=[8]", "--set", "model.latent_dim=2", "--set", "train.batch_size=128"]


@pytest.fixture()
def table(tmp_path, mixed_table):
    path = tmp_path / "data.csv"
    mixed_table.to_csv(path, index=False)
    return path


def _one_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("cadasg: error: "), err
    return err[0]


def test_train_in_process_with_zero_workers_force_and_evaluate_with_the_model(capsys, tmp_path, table):
    out = tmp_path / "model"
    assert main(["train", str(table), "--target", "label", "--context", "group", "--num-workers", "0",
                 "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == f"reading {table} ..." and lines[1].startswith("preparing 600 rows")
    assert "ETA" in err and "epoch 2/2" in err
    written = (out / "meta.json").read_bytes()
    # a second run onto the same directory is refused before the table is read, and leaves it as it was
    assert f"--out {out} exists; pass --force" in _one_error(
        capsys, ["train", str(tmp_path / "nope.csv"), "--target", "label", "--out", str(out)])
    assert (out / "meta.json").read_bytes() == written
    assert "--address and --use-gpu go with --num-workers" in _one_error(
        capsys, ["train", str(table), "--target", "label", "--address", "auto", "--out", str(tmp_path / "m2")])
    assert main(["train", str(table), "--target", "label", "--context", "group", "--out", str(out), "--force",
                 *TINY]) == 0
    capsys.readouterr()

    from cadasg_dist.synthesizer import CADASG

    model = CADASG.load(out)
    history = model.loss_history()
    assert list(history["epoch"]) == [1, 2] and "loss_vae" in history.columns
    syn = tmp_path / "syn.csv"
    model.sample(300, seed=1).to_csv(syn, index=False)
    real = tmp_path / "real.csv"
    pd.read_csv(table).head(300).to_csv(real, index=False)
    assert main(["evaluate", "--real", str(real), "--synthetic", str(syn), "--model", str(out),
                 "--out", str(tmp_path / "report")]) == 0
    text = capsys.readouterr().out
    assert "utility " in text and "worst context" in text
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["context"] == ["group"]


def test_force_is_needed_for_every_command_that_writes_a_model(capsys, tmp_path, table):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "meta.json").write_text("{}")
    assert "pass --force" in _one_error(capsys, ["federated", str(table), "--silo-column", "group", "--target",
                                                 "label", "--out", str(existing)])
    (existing / "picked").mkdir()
    (existing / "picked" / "meta.json").write_text("{}")
    assert "pass --force" in _one_error(capsys, ["tune", str(table), "--target", "label", "--trials", "1",
                                                 "--pick", "utility@epsilon<=3", "--out", str(existing)])
    demo = tmp_path / "demo"
    (demo / "model").mkdir(parents=True)
    (demo / "model" / "meta.json").write_text("{}")
    assert "pass --force" in _one_error(capsys, ["demo", "--out", str(demo)])


def test_a_missing_target_is_refused_before_the_engine_is_imported(tmp_path):
    code = ("import sys; from cadasg_dist.cli import main; "
            f"rc = main(['train', {str(tmp_path / 'none.csv')!r}, '--out', {str(tmp_path / 'm')!r}]); "
            "print(rc, 'torch' in sys.modules, 'pandas' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert run.stdout.split() == ["2", "False", "False"], run.stderr
    assert "--target is required" in run.stderr


def test_one_address_flag_the_old_federated_name_still_works(capsys):
    parser = make_parser()
    for command in (["train", "t.csv", "--out", "m"], ["tune", "t.csv", "--trials", "1", "--out", "m"],
                    ["federated", "t.csv"]):
        assert parser.parse_args([*command, "--address", "auto"]).address == "auto"
    args = parser.parse_args(["federated", "t.csv", "--ray-address", "ray://head:10001"])
    assert args.address == "ray://head:10001"
    assert "--ray-address is deprecated; use --address" in capsys.readouterr().err


def test_version_and_help_show_defaults_without_rst_markup(capsys):
    from cadasg_dist import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"cadasg {__version__}"
    with pytest.raises(SystemExit):
        main(["federated", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "``" not in text and "--rounds ROUNDS federated rounds (default: 5)" in text
    assert "[--address" in text and "[--ray-address" not in text and "--ray-address ADDRESS" not in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "required, unless --config sets target" in text and "(default: 0, train in this process)" in text
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    assert "(default: 0)" in capsys.readouterr().out  # a plain argparse default, shown by the shared formatter


def test_train_warns_of_schema_surprises_but_still_trains(capsys, tmp_path, mixed_table):
    df = mixed_table.head(300).copy()
    df["count"] = df["count"].astype(object)
    df.loc[[3, 7], "count"] = ["twenty", "unknown"]
    df["code"] = [f"K{i % 180:04d}" for i in range(len(df))]  # 180 values in 300 rows: a code, not a category
    df["ticket"] = np.random.default_rng(0).permutation(len(df)) + 10_000  # a record number in no order
    path = tmp_path / "messy.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "m"
    assert main(["train", str(path), "--target", "label", "--context", "group,level,flag", "--out", str(out),
                 *TINY]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cadasg: warning: ")]
    assert any(line.startswith("cadasg: warning: count: numbers but for 2 text values ('twenty', 'unknown')")
               for line in warnings), warnings
    assert any("code: 180 distinct values in 300 rows looks like an identifier" in line for line in warnings), warnings
    assert any("ticket: a different whole number on every row" in line for line in warnings), warnings
    assert any("context group, level, flag:" in line for line in warnings), warnings
    assert (out / "meta.json").exists()
