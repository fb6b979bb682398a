import numpy as np
import pandas as pd
import pytest

from cadasg_dist.config import ColumnOverride, DataConfig
from cadasg_dist.data import DataTransformer, infer_schema, read_table, write_table
from cadasg_dist.data.categorical import category_key
from cadasg_dist.errors import InvalidDataError


def _round_trip(df, **kw):
    schema = infer_schema(df, DataConfig(**kw))
    tr = DataTransformer(schema).fit(df)
    return schema, tr, tr.decode(tr.encode(df), np.random.default_rng(0))


def test_kinds_are_inferred(mixed_table):
    schema = infer_schema(mixed_table)
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {"group": "categorical", "flag": "boolean", "count": "integer", "amount": "continuous",
                     "score": "continuous", "level": "categorical", "when": "datetime", "label": "categorical"}
    assert schema["amount"].has_missing and not schema["score"].has_missing
    assert "amount.bounds" in schema.private_statistics()


def test_round_trip_is_exact_up_to_float32(mixed_table):
    _, _, back = _round_trip(mixed_table)
    for col in ["amount", "score"]:
        a, b = mixed_table[col].to_numpy(float), back[col].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(a)
        np.testing.assert_allclose(b[ok], a[ok], rtol=1e-3, atol=1e-3)
    assert (back["count"] == mixed_table["count"]).all() and back["count"].dtype == np.int64
    for col in ["group", "flag", "label"]:
        assert back[col].tolist() == mixed_table[col].tolist()
    assert back["level"].isna().sum() == mixed_table["level"].isna().sum()
    days = (back["when"] - mixed_table["when"]).abs().dt.total_seconds()
    assert days.max() < 3600 * 24


def test_point_mass_gets_an_indicator_span_and_decodes_exactly(mixed_table):
    _, tr, back = _round_trip(mixed_table)
    assert tr.transforms["count"].atom == 0.0
    assert any(s.column == "count" and s.role == "atom" for s in tr.spans)
    assert ((back["count"] == 0) == (mixed_table["count"] == 0)).all()


def test_decoded_values_respect_bounds_and_categories(mixed_table):
    schema = infer_schema(mixed_table, DataConfig(columns={"score": ColumnOverride(min=-1.0, max=1.0)}))
    tr = DataTransformer(schema).fit(mixed_table)
    noise = np.random.default_rng(1).normal(scale=3.0, size=(500, tr.output_dim)).astype(np.float32)
    probs = np.abs(noise)
    out = tr.decode(np.where([s.kind == "continuous" for s in tr.spans for _ in range(s.width)], noise, probs),
                    np.random.default_rng(2))
    assert out["score"].between(-1.0, 1.0).all()
    assert set(out["group"].dropna()) <= set(schema["group"].categories)
    assert out["count"].dtype == np.int64
    assert schema["score"].sources["bounds"] == "declared"


def test_standard_encoding_round_trips(mixed_table):
    schema = infer_schema(mixed_table)
    tr = DataTransformer(schema, encoding="standard").fit(mixed_table)
    back = tr.decode(tr.encode(mixed_table), np.random.default_rng(0))
    ok = mixed_table["score"].notna()
    np.testing.assert_allclose(back["score"][ok], mixed_table["score"][ok], rtol=1e-4, atol=1e-4)


def test_identifiers_are_refused_unless_declared():
    df = pd.DataFrame({"patient_id": np.arange(100), "x": np.random.default_rng(0).normal(size=100)})
    with pytest.raises(InvalidDataError, match="'patient_id' looks like an identifier"):
        infer_schema(df)
    schema = infer_schema(df, DataConfig(columns={"patient_id": ColumnOverride(kind="identifier")}))
    assert schema.names == ["x"] and schema.dropped == ("patient_id",)
    text = pd.DataFrame({"note": [f"free text {i}" for i in range(300)], "x": np.arange(300.0)})
    with pytest.raises(InvalidDataError, match="'note' looks like an identifier"):
        infer_schema(text)


def test_unseen_category_is_refused(mixed_table):
    schema = infer_schema(mixed_table)
    tr = DataTransformer(schema).fit(mixed_table)
    bad = mixed_table.head(3).copy()
    bad["group"] = "zzz"
    with pytest.raises(InvalidDataError, match="'zzz'"):
        tr.encode(bad)


def test_transformer_serialises_to_plain_data(mixed_table):
    import json

    schema, tr, _ = _round_trip(mixed_table)
    again = DataTransformer.from_dict(schema, json.loads(json.dumps(tr.to_dict())))
    assert again.spans == tr.spans
    np.testing.assert_array_equal(again.encode(mixed_table, seed=3), tr.encode(mixed_table, seed=3))


def test_io_round_trip_and_atomic_write(tmp_path, mixed_table):
    for name in ["t.csv", "t.parquet"]:
        write_table(mixed_table, tmp_path / name)
        assert len(read_table(tmp_path / name)) == len(mixed_table)
    with pytest.raises(InvalidDataError, match=".csv or .parquet"):
        write_table(mixed_table, tmp_path / "t.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.parquet"]
    with pytest.raises(InvalidDataError, match="not found"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InvalidDataError, match="empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(InvalidDataError, match="no rows"):
        read_table(tmp_path / "header.csv")


def test_missing_dates_are_missing_not_year_1677():
    when = pd.Series(pd.to_datetime(["2020-01-01", None, "2021-06-30"] * 20))
    df = pd.DataFrame({"when": when, "x": np.random.default_rng(0).normal(size=60)})
    schema, _, back = _round_trip(df)
    assert schema["when"].has_missing and schema["when"].min > 1.5e9
    assert back["when"].isna().sum() == when.isna().sum()
    assert back["when"].dropna().dt.year.isin([2020, 2021]).all()


def test_declared_categories_of_a_numeric_column_match_its_values():
    df = pd.DataFrame({"level": [1, 2, 3, 4] * 10, "x": np.random.default_rng(0).normal(size=40)})
    schema = infer_schema(df, DataConfig(columns={"level": ColumnOverride(categories=("1", "2", "3", "4"))}))
    assert schema["level"].categories == (1, 2, 3, 4)
    tr = DataTransformer(schema).fit(df)
    assert tr.decode(tr.encode(df), np.random.default_rng(0))["level"].tolist() == df["level"].tolist()


def test_category_key_makes_one_category_of_equal_numbers():
    # Prepare: the same category as a CSV, a Parquet file and numpy would hand it over
    spellings = [1, 1.0, np.int64(1), np.float32(1.0)]
    # Execute
    keys = {category_key(v) for v in spellings}
    # Assert: one key, a plain int; a fractional float and a string stay themselves
    assert keys == {1} and type(next(iter(keys))) is int
    assert category_key(1.5) == 1.5 and category_key("1") == "1"
