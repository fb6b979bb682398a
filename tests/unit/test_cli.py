"""CLI user errors: one line on stderr, exit code 2, nothing half-written."""

import pandas as pd
import pytest

from cadasg_dist.cli import main

TINY = ["--epochs", "1", "--set", "model.hidden=[16]", "--set", "model.critic_hidden=[16]",
        "--set", "model.utility_hidden=[8]", "--set", "model.latent_dim=2", "--set", "train.batch_size=128"]


@pytest.fixture()
def table(tmp_path, mixed_table):
    path = tmp_path / "data.csv"
    mixed_table.to_csv(path, index=False)
    return path


def _error(capsys, argv):
    code = main(argv)
    # progress lines ("reading DATA ...", "preparing ...") may come first: the error itself is one line
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.endswith(" ...")]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("cadasg: error: ")
    return err[0]


def test_train_and_sample_errors(capsys, tmp_path, table):
    out = tmp_path / "model"
    assert "not found" in _error(capsys, ["train", str(tmp_path / "nope.csv"), "--target", "label", "--out", str(out)])
    assert "unknown target column 'nope'" in _error(
        capsys, ["train", str(table), "--target", "nope", "--out", str(out)])
    assert "unknown context column 'zz'" in _error(
        capsys, ["train", str(table), "--target", "label", "--context", "zz", "--out", str(out)])
    assert "--target is required" in _error(capsys, ["train", str(table), "--out", str(out)])
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b\n")
    assert "no rows" in _error(capsys, ["train", str(empty), "--target", "a", "--out", str(out)])
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"not parquet at all")
    assert "cannot read" in _error(capsys, ["train", str(garbage), "--target", "a", "--out", str(out)])
    assert not out.exists()


def test_end_to_end_train_sample_and_their_errors(capsys, tmp_path, table):
    out = tmp_path / "model"
    assert main(["train", str(table), "--target", "label", "--context", "group", "--out", str(out), *TINY]) == 0
    text = capsys.readouterr().out
    assert "NOT PRIVATE" in text and "model written to" in text
    csv = tmp_path / "rows.csv"
    assert main(["sample", str(out), "--n", "50", "--context", "group=rare", "--out", str(csv)]) == 0
    rows = pd.read_csv(csv)
    assert len(rows) == 50 and set(rows["group"]) == {"rare"}
    assert capsys.readouterr().err.startswith("seed: ")  # a fresh seed, reported
    bad = tmp_path / "bad.csv"
    assert "valid values: a, b, rare" in _error(
        capsys, ["sample", str(out), "--n", "5", "--context", "group=zzz", "--out", str(bad)])
    assert "positive" in _error(capsys, ["sample", str(out), "--n", "0", "--out", str(bad)])
    assert "not found" in _error(capsys, ["sample", str(tmp_path / "none"), "--n", "5", "--out", str(bad)])
    assert ".csv or .parquet" in _error(capsys, ["sample", str(out), "--n", "5", "--out", str(tmp_path / "x.txt")])
    assert not bad.exists()
    assert main(["privacy", str(out)]) == 0
    assert "NOT PRIVATE" in capsys.readouterr().out


def test_bad_config_values_are_one_line(capsys, tmp_path, table):
    out = tmp_path / "model"
    assert "unknown config key 'model.nope'" in _error(
        capsys, ["train", str(table), "--target", "label", "--set", "model.nope=1", "--out", str(out)])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: [1, 2]\n")
    assert "must be a mapping" in _error(
        capsys, ["train", str(table), "--target", "label", "--config", str(cfg), "--out", str(out)])


def test_demo_rejects_a_negative_worker_count(capsys, tmp_path):
    out = tmp_path / "demo"
    assert "--num-workers -1" in _error(capsys, ["demo", "--out", str(out), "--num-workers", "-1"])
    assert not out.exists()


def test_federated_flags_and_the_flower_run_config_give_the_same_configs(monkeypatch):
    from cadasg_dist.cli import make_parser
    from cadasg_dist.cli.federated import build_configs
    from cadasg_dist.federation import simulation

    seen = {}
    monkeypatch.setattr(simulation, "prepare_run", lambda cfg, fed, **kwargs: seen.update(cfg=cfg, fed=fed))
    simulation.settings_from_run_config({"target": "label", "context": "group, site", "epsilon": 3.0, "rounds": 4,
                                         "local-epochs": 1, "secagg": False, "strategy": "", "data": "",
                                         "inject-failure": "0:2:raise"})
    args = make_parser().parse_args(["federated", "t.csv", "--silo-column", "site", "--target", "label",
                                     "--context", "group,site", "--epsilon", "3", "--rounds", "4",
                                     "--local-epochs", "1", "--no-secagg",
                                     "--set", "federated.inject_failure=0:2:raise"])
    cfg, fed = build_configs(args)
    assert (cfg, fed) == (seen["cfg"], seen["fed"])
    assert cfg.context.columns == ("group", "site") and fed.rounds == 4 and not fed.secagg


def test_epsilon_alone_trains_with_the_private_profile_and_a_set_value_wins(capsys, tmp_path, table):
    import json

    from cadasg_dist.config import profiles
    from cadasg_dist.synthesizer import CADASG

    declared = tmp_path / "declared.yaml"
    declared.write_text("data:\n  columns:\n    group: {categories: [a, b, rare]}\n"
                        "    label: {categories: ['no', 'yes']}\n    when: {kind: identifier}\n"
                        "model: {hidden: [16], critic_hidden: [16]}\n")
    out = tmp_path / "private"
    # --epochs and --set model.latent_dim=32 (the non-private default's value) are the user's; the rest is auto
    assert main(["train", str(table), "--target", "label", "--context", "group", "--out", str(out), "--config",
                 str(declared), "--epsilon", "4", "--epochs", "1", "--set", "model.latent_dim=32"]) == 0
    capsys.readouterr()
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["latent_dim"] == 32 and saved["train"]["epochs"] == 1
    assert saved["train"]["batch_size"] == profiles.PRIVATE["train.batch_size"]
    assert saved["model"]["utility_hidden"] == list(profiles.PRIVATE["model.utility_hidden"])
    assert (saved["cache"]["clip_x"], saved["cache"]["ema_alpha"]) == (5.0, 0.99)
    loaded = CADASG.load(out)  # the artifact holds resolved values, and loads them as they are
    assert loaded.config.resolved(10) == loaded.config and loaded.config.model.latent_dim == 32
    assert len(loaded.sample(20, seed=1)) == 20
