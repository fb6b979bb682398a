"""Derived columns: declared indicators of another column, never read, computed at sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.config import DataConfig
from cadasg_dist.data.schema import Schema, infer_schema
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.private.prepare import prepare_private
from cadasg_dist.synthesizer import CADASG

LEVEL_IS = {f"level_is_{i}": {"kind": "derived", "of": "level", "equals": i} for i in (1, 2, 3)}


@pytest.fixture(scope="module")
def table(mixed_table) -> pd.DataFrame:
    """The mixed table with one-hot copies of ``level`` in the middle of its columns."""
    df = mixed_table.copy()
    at = list(df.columns).index("level") + 1
    for offset, i in enumerate((1, 2, 3)):
        df.insert(at + offset, f"level_is_{i}", (df["level"] == i).astype(np.int64))
    return df


@pytest.fixture(scope="module")
def model(table, tiny_config) -> CADASG:
    return CADASG(tiny_config.replace(**{"data.columns": LEVEL_IS})).fit(table)


def test_derived_columns_are_not_modelled_but_keep_their_place(table):
    schema = infer_schema(table, _data(LEVEL_IS))
    assert not {"level_is_1", "level_is_2", "level_is_3"} & set(schema.names)
    assert schema.output_names == list(table.columns)
    again = Schema.from_dict(schema.to_dict())
    assert again == schema


def test_sampled_indicators_agree_with_their_source_in_every_row(model, table):
    out = model.sample(3000, seed=4)
    assert list(out.columns) == list(table.columns)
    level = out["level"]
    for i in (1, 2, 3):
        col = out[f"level_is_{i}"]
        assert (col[level.notna()] == (level[level.notna()] == i).astype(int)).all()
        assert col[level.isna()].isna().all()
    assert level.isna().any()  # the mixed table's level has missing values: the case above is exercised


def test_reloaded_model_samples_the_same_derived_columns(model, tmp_path):
    model.save(tmp_path / "m")
    again = CADASG.load(tmp_path / "m")
    pd.testing.assert_frame_equal(again.sample(500, seed=1), model.sample(500, seed=1))


def test_real_values_of_a_derived_column_are_never_read(table, tiny_config):
    """Scrambling the real indicator changes nothing a fit reads: the private release and encoding
    are the same draw for the same noise."""
    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "data.columns": {
        **LEVEL_IS, "group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}})
    scrambled = table.copy()
    scrambled["level_is_2"] = np.random.default_rng(0).integers(0, 2, len(table))
    a = prepare_private(table, cfg, rng=np.random.default_rng(0))
    b = prepare_private(scrambled, cfg, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a.transformer.encode(a.frame, seed=0), b.transformer.encode(b.frame, seed=0))
    assert a.schema == b.schema and "level_is_2" not in a.schema.names
    histograms = next(e for e in a.ledger.mechanisms if e.name == "preprocess/histograms")
    assert histograms.sensitivity == pytest.approx(np.sqrt(len(a.schema.columns)))  # derived ones not counted


def test_evaluation_schema_lists_the_derived_columns_as_flags(model, table):
    schema = model.schema.evaluation_schema()
    assert schema.names == list(table.columns)
    assert schema["level_is_2"].kind == "categorical" and schema["level_is_2"].categories == (0, 1)


@pytest.mark.parametrize("columns, message", [
    ({"level_is_1": {"kind": "derived", "equals": 1}}, "needs both data.columns.level_is_1.of"),
    ({"level_is_1": {"kind": "derived", "of": "nope", "equals": 1}}, "of='nope' must name another modelled"),
    ({"level_is_1": {"kind": "derived", "of": "level_is_1", "equals": 1}}, "must name another modelled"),
    ({"level_is_1": {"of": "level", "equals": 1}}, "sets of/equals but is not derived"),
    ({"level": {"categories": [1, 2, 3]}, "level_is_1": {"kind": "derived", "of": "level", "equals": 7}},
     r"equals=7 is not a declared category of 'level': use one of \['1', '2', '3'\]"),
])
def test_bad_declarations_are_refused_in_one_line(table, columns, message):
    with pytest.raises(InvalidDataError, match=message) as err:
        infer_schema(table, _data(columns))
    assert "\n" not in str(err.value)


def test_a_derived_column_cannot_be_the_target(table, tiny_config):
    cfg = tiny_config.replace(**{"data.columns": LEVEL_IS, "target": "level_is_2"})
    with pytest.raises(InvalidDataError, match="'level_is_2' is declared derived"):
        CADASG(cfg).fit(table)


def _data(columns: dict) -> DataConfig:
    from cadasg_dist.config import CADASGConfig

    return CADASGConfig.from_dict({"data": {"columns": columns}}).data


def test_serving_metadata_lists_derived_columns_in_table_order(model, table):
    from cadasg_dist.serving.models import public_metadata

    meta = public_metadata(model, name="m", version="1", loaded_at="now", valid={})
    columns = meta["schema"]["columns"]
    assert [c["name"] for c in columns] == list(table.columns)
    entry = next(c for c in columns if c["name"] == "level_is_3")
    assert entry == {"name": "level_is_3", "kind": "derived", "dtype": "int64", "of": "level", "equals": 3,
                     "nullable": True}
