"""A codebook in a fit and at the command line; categories by value; a value outside a declared set."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import yaml

from cadasg_dist.cli import main
from cadasg_dist.data.codebook import Codebook
from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.private.prepare import prepare_private
from cadasg_dist.synthesizer import CADASG

DECLARED = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}
SECRET = "Mrs-Q-Smith-1937"  # a value outside the declared set: one person's, never to be echoed
TINY = ["--epochs", "1", "--set", "model.hidden=[16]", "--set", "model.critic_hidden=[16]",
        "--set", "model.utility_hidden=[8]", "--set", "model.latent_dim=2", "--set", "train.batch_size=128"]


@pytest.fixture(scope="module")
def private_cfg(tiny_config):
    return tiny_config.replace(**{"privacy.epsilon": 4.0, "data.columns": DECLARED})


@pytest.mark.parametrize("spelling", [[False, True], ["False", "True"], [0, 1]])
def test_a_boolean_declared_categorical_fits_however_spelled(mixed_table, tiny_config, private_cfg, spelling):
    columns = {**DECLARED, "flag": {"kind": "categorical", "categories": spelling},
               "level": {"categories": ["1", "2", "3"]}}  # numbers declared as text match a numeric column
    plain = CADASG(tiny_config.replace(**{"data.columns": columns})).prepare(mixed_table)
    private = prepare_private(mixed_table, private_cfg.replace(**{"data.columns": columns}),
                              rng=np.random.default_rng(0))
    for schema in (plain.schema, private.schema):
        assert schema["flag"].categories == (False, True) and schema["level"].categories == (1, 2, 3)
    shares = plain.transformer.transforms["flag"].frequencies
    assert shares[1] == pytest.approx(mixed_table["flag"].mean())  # True counted as True


def test_fit_takes_a_codebook_and_its_own_config_wins(mixed_table, tiny_config):
    book = Codebook.detect(mixed_table)
    model = CADASG(tiny_config.replace(**{"data.columns": {"amount": {"max": 5000}}})).fit(mixed_table, codebook=book)
    assert model.schema["amount"].max == 5000 and model.schema["amount"].sources["bounds"] == "declared"
    assert model.schema["label"].sources["categories"] == "declared"
    with pytest.raises(InvalidDataError, match="codebook declares column 'amount'"):
        CADASG(tiny_config).prepare(mixed_table.drop(columns=["amount"]), codebook=book)


def _with_secret(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["group"] = out["group"].astype(object)
    out.loc[[3, 50, 400], "group"] = SECRET
    return out


def test_a_value_outside_the_set_is_missing_in_a_private_fit_and_never_echoed(mixed_table, private_cfg, tmp_path,
                                                                                caplog, capsys):
    caplog.set_level(logging.DEBUG)
    model = CADASG(private_cfg).fit(_with_secret(mixed_table))
    path = model.save(tmp_path / "model")
    rows = model.sample(300, seed=1)
    assert model.ledger.private and SECRET not in set(rows["group"].astype(str))
    said = caplog.text + "".join(capsys.readouterr())
    assert SECRET not in said
    assert not [p for p in path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert model.extractor.domain[:3] == [("a",), ("b",), ("rare",)]


def test_a_value_outside_the_set_stops_a_non_private_fit_with_the_count_and_the_fix(mixed_table, tiny_config):
    cfg = tiny_config.replace(**{"data.columns": DECLARED})
    with pytest.raises(InvalidDataError, match=r"column 'group': 3 rows hold values outside its declared category "
                                               r"set .*add them to the set"):
        CADASG(cfg).prepare(_with_secret(mixed_table))


def test_a_private_run_names_every_column_to_declare_with_a_yaml_block(mixed_table, private_cfg):
    bare = private_cfg.replace(**{"data.columns": {}, "privacy.preprocessing": "declared"})
    with pytest.raises(ConfigError) as caught:
        prepare_private(mixed_table, bare, rng=np.random.default_rng(0))
    message = str(caught.value)
    assert "declare them for: group, label" in message and "count, amount, score, level, when" in message
    block = yaml.safe_load("\n".join(line for line in message.splitlines() if line.startswith("  ")
                                     and "categories" in line))
    assert block == {"group": {"kind": "categorical", "categories": []},
                     "label": {"kind": "categorical", "categories": []}}
    assert "  amount: {kind: continuous, min: ?, max: ?}" in message and "cadasg schema DATA --out" in message
    assert "rare" not in message and "yes" not in message  # drawn from declared facts, not the values
    empty = private_cfg.replace(**{"data.columns": {**DECLARED, "label": {"categories": []}}})
    with pytest.raises(InvalidDataError, match="'label' declares no categories"):
        prepare_private(mixed_table, empty, rng=np.random.default_rng(0))


@pytest.fixture()
def table(tmp_path, mixed_table):
    path = tmp_path / "data.csv"
    mixed_table.to_csv(path, index=False)
    return path


def test_schema_writes_a_draft_refuses_to_overwrite_and_checks(capsys, tmp_path, table):
    out = tmp_path / "codebook.yaml"
    assert main(["schema", str(table), "--out", str(out), "--target", "label", "--context", "group"]) == 0
    printed = capsys.readouterr().out
    assert "group" in printed and "categorical" in printed and "READ FROM THE DATA" in printed
    first = out.read_text()
    assert Codebook.from_yaml(out).names == ["group", "flag", "count", "amount", "score", "level", "when", "label"]
    assert main(["schema", str(table), "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_text() == first
    assert main(["schema", str(table), "--out", str(out), "--force"]) == 0
    capsys.readouterr()
    assert main(["schema", str(table), "--check", str(out)]) == 0
    assert "no problem found" in capsys.readouterr().out
    out.write_text(first.replace("categories: [a, b, rare]", "categories: [a, b]").replace("  score:", "  scor:"))
    assert main(["schema", str(table), "--check", str(out), "--private"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["group", "score", "scor"]
    assert main(["schema", str(table)]) == 0  # no --out: the draft on stdout
    assert yaml.safe_load(capsys.readouterr().out)["columns"]["flag"] == {"kind": "boolean",
                                                                          "categories": [False, True]}


def test_train_reads_the_codebook_in_a_private_run(capsys, tmp_path, table, mixed_table):
    book = Codebook.detect(pd.read_csv(table))
    path = tmp_path / "codebook.yaml"
    book.to_yaml(path)
    out = tmp_path / "model"
    argv = ["train", str(table), "--target", "label", "--context", "group", "--epsilon", "4", "--out", str(out), *TINY]
    assert main(argv[:-len(TINY)] + ["--epochs", "1"]) == 2  # undeclared text columns: one error
    assert "declare them for: group, when, label" in capsys.readouterr().err
    assert main([*argv, "--codebook", str(path)]) == 0
    assert "differentially private" in capsys.readouterr().out
    assert CADASG.load(out).schema["when"].kind == "datetime"


@pytest.mark.parametrize(("declared", "kind"), [("integer", "categorical"), (None, "categorical"),
                                                ("continuous", "continuous")])
def test_a_target_drafted_integer_with_few_levels_in_its_bounds_is_coded_as_classes(mixed_table, private_cfg,
                                                                                     declared, kind):
    # a count whose tail a draft saw (so it says integer) but whose bounds hold few levels: the target
    # is modelled as classes, as with an undeclared kind; another integer column keeps its declared kind
    df = mixed_table.assign(visits=np.minimum(mixed_table["count"], 5), other=np.minimum(mixed_table["count"], 5))
    columns = {**DECLARED, "visits": {"min": 0, "max": 5, **({"kind": declared} if declared else {})},
               "other": {"kind": "integer", "min": 0, "max": 5}}
    cfg = private_cfg.replace(**{"target": "visits", "data.columns": columns})
    schema = prepare_private(df, cfg, rng=np.random.default_rng(0)).schema
    assert schema["visits"].kind == kind and schema["other"].kind == "integer"
    if kind == "categorical":
        assert schema["visits"].categories == (0, 1, 2, 3, 4, 5)
