"""The guarantee's own regression test, in-process: a private run on a table and on the same table
plus one odd row (a new category spelling, a fractional value in an integer column, a missing value,
an extreme value), with the secret noise seeded alike, differs only in the noisy numbers."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from cadasg_dist.cli import main
from cadasg_dist.data.codebook import Codebook
from tests.neighbours import artifact_view, exact_channels, lines_view, seeded_secrets


def odd_row(df: pd.DataFrame) -> pd.DataFrame:
    row = df.iloc[[0]].copy()
    row["group"] = "A "  # a spelling outside the declared set
    row["level"] = 2.5  # fractional in an integer column
    row["count"] = np.nan  # missing where the column has none
    row["amount"] = 1e12  # far outside the bounds
    return pd.concat([df, row], ignore_index=True)


def write(df: pd.DataFrame, path) -> None:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path)


def private_run(tmp_path, table: pd.DataFrame, suffix: str, seed: int, name: str, capsys, caplog) -> dict:
    """Train privately through the CLI; everything that leaves the run, as plain data."""
    data = tmp_path / f"{name}{suffix}"
    write(table, data)
    caplog.clear()
    with seeded_secrets(seed), caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["train", str(data), "--target", "label", "--context", "group", "--epsilon", "4",
                     "--config", str(tmp_path / "config.yaml"), "--codebook", str(tmp_path / "codebook.yaml"),
                     "--out", str(tmp_path / f"{name}-model")])
    out = capsys.readouterr()
    assert code == 0, out.err
    # the library's own log lines and warnings (not, say, a ResourceWarning of an earlier test's
    # objects that the garbage collector happens to close during this run)
    logged = "\n".join([f"{r.levelname} {r.name} {r.getMessage()}" for r in caplog.records
                         if r.name.startswith("cadasg_dist")]
                        + [f"{w.category.__name__} {w.message}" for w in caught if "cadasg_dist" in w.filename])
    text = (out.out + out.err + logged).replace(name, "RUN")
    return {"artifact": artifact_view(tmp_path / f"{name}-model"), "lines": lines_view(text)}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_one_odd_row_changes_nothing_but_noisy_numbers(tmp_path, mixed_table, tiny_config, suffix, capsys, caplog):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config.replace(**{"train.epochs": 1}).to_dict()))
    Codebook.detect(mixed_table).to_yaml(tmp_path / "codebook.yaml")  # as if the owner confirmed it
    base = private_run(tmp_path, mixed_table, suffix, 7, "run-a", capsys, caplog)
    neighbour = private_run(tmp_path, odd_row(mixed_table), suffix, 7, "run-b", capsys, caplog)
    reseeded = private_run(tmp_path, mixed_table, suffix, 9, "run-c", capsys, caplog)  # noise far from seed 7's
    found = exact_channels(base, neighbour, reseeded)
    assert found == [], "\n".join(found)
