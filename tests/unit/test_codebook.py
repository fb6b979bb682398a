"""The public codebook: detect a draft, YAML round trip, every problem at once, merged into a fit."""

from __future__ import annotations

import dataclasses
import math
import tempfile

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.config import ColumnOverride
from cadasg_dist.data.codebook import Codebook, CodebookColumn
from cadasg_dist.data.values import CategoryMatcher, declared_categories, spelling_key
from cadasg_dist.errors import ConfigError, InvalidDataError

TRICKY = ("yes", "no", "1e5", "010", "null", "", "a b", "é", "true", "on", "2020-01-01", "x: y", True, False, 3,
          2.5, 1.0e20, -0.0001)


def test_yaml_round_trip_keeps_every_value_and_type(tmp_path):
    # Prepare: values YAML would misread unquoted, odd column names, dates, a derived column
    book = Codebook(columns=(
        CodebookColumn("yes", "categorical", categories=TRICKY),
        CodebookColumn("my col", "continuous", min=-1.5e-7, max=1e300),
        CodebookColumn("n", "integer", min=0, max=120),
        CodebookColumn("when", "datetime", min="2020-01-01", max="2021-03-04T05:06:07"),
        CodebookColumn("flag", "boolean", categories=(False, True)),
        CodebookColumn("id", "identifier", identifier="its name marks it as an identifier"),
        CodebookColumn("is_a", "derived", of="yes", equals="yes"),
    ))
    path = tmp_path / "codebook.yaml"
    # Execute
    book.to_yaml(path, source="data.csv")
    text = path.read_text()
    back = Codebook.from_yaml(path)
    # Assert: identical, typed as written, with the draft's header first
    assert back == book
    assert [type(v) for v in back["yes"].categories] == [type(v) for v in TRICKY]
    assert text.startswith("# CADASG codebook") and "READ FROM THE DATA (data.csv)" in text
    assert "the data owner must confirm EVERY entry from documentation" in text.replace("\n# ", " ")
    assert '"yes", "no", "1e5", "010", "null", "", "a b", "é", "true", "on", "2020-01-01", "x: y", true, false' in text
    assert "flag: {kind: boolean, categories: [false, true]}" in text
    assert Codebook.from_dict(book.to_dict()) == book
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file


def test_detect_rwm5yr_marks_the_identifier_and_reads_every_kind(rwm5yr):
    book = Codebook.detect(rwm5yr)
    assert book.names == list(rwm5yr.columns)
    assert book["id"].kind == "identifier" and "identifier" in book["id"].identifier
    assert book["year"].categories == (1984, 1985, 1986, 1987, 1988)
    assert (book["age"].kind, book["age"].min, book["age"].max) == ("integer", 25, 64)
    assert book["hhninc"].kind == "continuous"
    assert book.check(rwm5yr) == []
    overrides = book.as_overrides()
    assert overrides["id"] == ColumnOverride(kind="identifier")
    assert overrides["age"] == ColumnOverride(kind="integer", min=25.0, max=64.0)


def test_detect_mixed_table_reads_booleans_dates_and_gaps(mixed_table):
    book = Codebook.detect(mixed_table)
    kinds = {c.name: c.kind for c in book.columns}
    assert kinds == {"group": "categorical", "flag": "boolean", "count": "integer", "amount": "continuous",
                     "score": "continuous", "level": "categorical", "when": "datetime", "label": "categorical"}
    assert book["flag"].categories == (False, True) and book["label"].categories == ("no", "yes")
    assert book["level"].categories == (1, 2, 3)  # float storage (gaps), integer codes
    assert book["when"].min == "2020-01-01" and isinstance(book["when"].max, str)
    assert math.isclose(book.as_overrides()["when"].min, pd.Timestamp("2020-01-01").timestamp())
    assert book.check(mixed_table) == []
    with_id = mixed_table.assign(patient_id=np.arange(len(mixed_table)), empty=np.nan)
    detected = Codebook.detect(with_id)  # never refuses: marks, with the reason
    assert detected["patient_id"].kind == detected["empty"].kind == "identifier"


def test_check_reports_every_problem_at_once_and_no_value_when_private(mixed_table):
    book = Codebook.detect(mixed_table)
    df = mixed_table.drop(columns=["score"]).assign(extra=1)
    df["group"] = df["group"].astype(object)
    df.loc[:2, "group"] = "SECRET-VALUE"
    df["count"] = df["count"].astype(object)
    df.loc[5, "count"] = "n/a"
    df.loc[6, "amount"] = -1.0
    df["level"] = df["level"] + 0.5
    problems = book.check(df)
    by_column = {p.column: p.code for p in problems}
    assert by_column == {"group": "outside_categories", "count": "non_numeric", "amount": "outside_bounds",
                         "level": "outside_categories", "extra": "undeclared", "score": "not_in_data"}
    assert "3 rows hold values outside its category set (such as SECRET-VALUE)" in str(problems[0])
    assert "1 row lies (0.2% of the table) outside" in next(str(p) for p in problems if p.column == "amount")
    private = book.check(df, private=True)
    assert [p.code for p in private] == [p.code for p in problems]
    assert not any("SECRET" in str(p) or "n/a" in str(p) for p in private)
    fractional = dataclasses.replace(book["score"], kind="integer", min=None, max=None)
    codes = [p.code for p in Codebook((fractional,)).check(mixed_table[["score"]])]
    assert codes == ["fractional"]


@pytest.mark.parametrize(("raw", "message"), [
    ({"columns": {"a": {"kind": "number"}}}, "kind must be one of"),
    ({"columns": {"a": {"kind": "integer", "mn": 0}}}, "unknown key 'mn'"),
    ({"columns": {"a": {"kind": "integer", "min": 5, "max": 1}}}, "min 5 is above max 1"),
    ({"columns": {"a": {"kind": "continuous", "categories": [1]}}}, "categorical or boolean"),
    ({"columns": {"a": {"kind": "derived", "of": "b"}}}, "of and equals go together"),
    ({"columns": {"a": {"kind": "datetime", "min": "not a date"}}}, "must be a date"),
    ({"cols": {}}, "one key, columns"),
])
def test_a_bad_entry_is_refused_with_its_place(raw, message):
    with pytest.raises(ConfigError, match=message):
        Codebook.from_dict(raw)


def test_config_entries_win_over_the_codebook(tiny_config):
    book = Codebook((CodebookColumn("count", "integer", min=0, max=20), CodebookColumn("group", "categorical",
                                                                                       categories=("a", "b"))))
    cfg = tiny_config.replace(**{"data.columns": {"count": {"max": 50}, "group": {"kind": "identifier"}}})
    merged = book.apply_to(cfg).data.columns
    assert merged["count"] == ColumnOverride(kind="integer", min=0.0, max=50.0)  # field by field
    assert merged["group"] == ColumnOverride(kind="identifier")  # another kind: the config's entry whole


@pytest.mark.parametrize("spelling", [[False, True], ["False", "True"], [0, 1], ["false", "true"], ["0", "1"]])
def test_a_boolean_column_matches_its_categories_however_spelled(spelling):
    flags = pd.Series([True, False, True], name="flag")
    cats = declared_categories(tuple(spelling), flags, "categorical", "flag")
    assert cats == (False, True)
    gaps = pd.Series([True, None, False], dtype=object, name="flag")  # a bool column with gaps
    assert not CategoryMatcher(tuple(spelling)).outside(gaps).any()
    assert not CategoryMatcher(tuple(spelling)).outside(flags).any()


def test_spellings_are_values_but_a_string_that_is_no_number_stays_text():
    assert spelling_key("True") is True and spelling_key("2") == 2 and spelling_key("2.5") == 2.5
    assert spelling_key("010") == "010" and spelling_key("1e5") == "1e5" and spelling_key("yes") == "yes"
    with pytest.raises(InvalidDataError, match="declares category 'b'"):
        declared_categories(("1", "b"), pd.Series([1, 2]), "categorical", "level")
    with pytest.raises(InvalidDataError, match="twice"):
        declared_categories(("1", 1.0), pd.Series([1, 2]), "categorical", "level")
    with pytest.raises(InvalidDataError, match="declares no categories"):
        declared_categories((), pd.Series(["a"]), "categorical", "group")


def test_a_one_hot_copy_of_a_category_is_drafted_as_derived():
    from cadasg_dist.datasets import load_rwm5yr

    book = Codebook.detect(load_rwm5yr())
    assert [(c.name, c.kind, c.of, c.equals) for c in book.columns if c.kind == "derived"] == [
        (f"edlevel{i}", "derived", "edlevel", i) for i in range(1, 5)]
    assert book["edlevel"].kind == "categorical" and book["female"].kind == "categorical"  # sources and plain 0/1
    again = Codebook.from_yaml(book.to_yaml(tempfile.mkdtemp() + "/codebook.yaml"))
    assert again == book  # the proposal round-trips as a declaration
