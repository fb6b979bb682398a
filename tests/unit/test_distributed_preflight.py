"""A distributed run refuses a bad config, table or declaration before Ray is started
(``distributed.preflight``): each test makes ``ray.init`` raise if anything calls it."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.config import CADASGConfig, ContextConfig
from cadasg_dist.distributed.fit import fit_on_ray
from cadasg_dist.errors import ConfigError, InvalidDataError


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    ray = pytest.importorskip("ray")

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called before the run's checks")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def _table(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"group": rng.choice(["a", "b"], size=n), "x": rng.normal(size=n),
                         "label": rng.choice(["no", "yes"], size=n)})


def _private(**declared) -> CADASGConfig:
    cfg = CADASGConfig(target="label", context=ContextConfig(columns=("group",)))
    return cfg.replace(**{"privacy.epsilon": 3.0, "data.columns": declared})


def test_private_run_without_declared_categories_fails_before_ray(tmp_path):
    # Prepare: a CSV whose text columns have no declared category sets.
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    # Execute: the CLI's distributed entry, with ray.init made to fail the test if called.
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        fit_on_ray(_private(), path, num_workers=2)
    # Assert: the engine's own message, naming every column to declare (never a value), in moments.
    text = str(err.value)
    assert "cannot read category sets from the data; declare them for: group, label" in text
    assert "label: {kind: categorical, categories: []}" in text
    assert "yes" not in text and "'a'" not in text
    assert time.perf_counter() - start < 5.0


def test_declared_categories_pass_the_checks_and_reach_ray(tmp_path):
    # A Parquet file with every category set declared: the checks pass and the run goes on to
    # start Ray (here the patched ray.init, which is how the test sees it got that far).
    path = tmp_path / "t.parquet"
    _table().to_parquet(path, index=False)
    cfg = _private(group={"categories": ["a", "b"]}, label={"categories": ["no", "yes"]})
    with pytest.raises(AssertionError, match="ray.init was called"):
        fit_on_ray(cfg, path, num_workers=2)


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"target": "missing"}, InvalidDataError, "unknown target column 'missing'"),
    ({"context.columns": ["nope"]}, InvalidDataError, "unknown context column 'nope'"),
    ({"target": "group"}, InvalidDataError, "cannot also be a context column"),
    ({"privacy.unit": "group"}, ConfigError, "privacy.unit='group'"),
    ({"data.columns": {"label": {"kind": "identifier"}}}, InvalidDataError, "declared identifier"),
])
def test_bad_columns_and_settings_fail_before_ray(change, error, message):
    cfg = _private(group={"categories": ["a", "b"]}, label={"categories": ["no", "yes"]}).replace(**change)
    with pytest.raises(error, match=message):
        fit_on_ray(cfg, _table(), num_workers=2)


def test_bad_sources_and_worker_counts_fail_before_ray(tmp_path):
    cfg = CADASGConfig(target="label", context=ContextConfig(columns=("group",)))
    with pytest.raises(InvalidDataError, match="data file not found"):
        fit_on_ray(cfg, tmp_path / "absent.csv", num_workers=2)
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(InvalidDataError, match="use a .csv or .parquet file"):
        fit_on_ray(cfg, tmp_path / "t.json", num_workers=2)
    (tmp_path / "empty.csv").write_text("group,x,label\n")
    with pytest.raises(InvalidDataError, match="no rows"):
        fit_on_ray(cfg, tmp_path / "empty.csv", num_workers=2)
    with pytest.raises(ConfigError, match="distributed.num_workers must be >= 1"):
        fit_on_ray(cfg, _table(), num_workers=0)


def test_private_table_over_the_drivers_rows_fails_before_ray():
    from cadasg_dist.distributed.trainer import fit_distributed
    from cadasg_dist.synthesizer import CADASG

    cfg = _private(group={"categories": ["a", "b"]}, label={"categories": ["no", "yes"]})
    with pytest.raises(ConfigError, match="reads at most 100 rows"):
        fit_distributed(CADASG(cfg.replace(**{"distributed.num_workers": 2})), _table(), prepare_rows=100)


def test_cli_train_exits_2_before_ray(tmp_path, capsys):
    from cadasg_dist.cli import main

    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    code = main(["train", str(path), "--target", "label", "--context", "group", "--epsilon", "3",
                 "--num-workers", "2", "--out", str(tmp_path / "model")])
    assert code == 2
    assert "declare them for: group, label" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_the_head_of_a_parquet_directory_is_read_from_one_part_with_its_partition_columns(tmp_path):
    from cadasg_dist.distributed.preflight import HEAD_ROWS, parquet_head

    table = _table(3 * HEAD_ROWS)
    for site in ("north", "south"):  # hive partitions: the column is in the path, not in the files
        (tmp_path / f"site={site}").mkdir()
    table.iloc[:0].to_parquet(tmp_path / "site=north" / "part-0.parquet", index=False)  # an empty part first
    table.to_parquet(tmp_path / "site=south" / "part-1.parquet", index=False, row_group_size=len(table))
    head, rows = parquet_head(tmp_path)
    assert rows == len(table) and len(head) == HEAD_ROWS
    assert list(head.columns) == [*table.columns, "site"] and set(head["site"]) == {"south"}
    pd.testing.assert_frame_equal(head[list(table.columns)], table.iloc[:HEAD_ROWS])
    table.iloc[:0].to_parquet(tmp_path / "site=south" / "part-1.parquet", index=False)
    with pytest.raises(InvalidDataError, match="no rows"):
        parquet_head(tmp_path)
