"""Private preprocessing: undeclared statistics are refused or paid for, never read raw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.data.schema import infer_schema
from cadasg_dist.errors import ConfigError, PrivacyBudgetError
from cadasg_dist.private.fit import fit_private
from cadasg_dist.private.prepare import prepare_private
from cadasg_dist.private.releases import credible_cells, within_support


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)  # tests only: a real release draws its noise from OS entropy


DECLARED = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}


@pytest.fixture(scope="module")
def cfg(tiny_config):
    return tiny_config.replace(**{"privacy.epsilon": 4.0, "data.columns": DECLARED})


@pytest.fixture(scope="module")
def prepared(mixed_table, cfg):
    return prepare_private(mixed_table, cfg, rng=_rng())


def test_text_columns_without_declared_categories_are_refused(mixed_table, tiny_config):
    with pytest.raises(ConfigError, match="declare them for: group, label"):
        prepare_private(mixed_table, tiny_config.replace(**{"privacy.epsilon": 4.0}), rng=_rng())


def test_declared_mode_lists_every_undeclared_bound(mixed_table, cfg):
    with pytest.raises(ConfigError, match="count, amount, score, level, when"):
        prepare_private(mixed_table, cfg.replace(**{"privacy.preprocessing": "declared"}), rng=_rng())


def test_dp_mode_pays_for_every_statistic_it_reads(prepared):
    names = [m.name for m in prepared.ledger.mechanisms]
    assert names == ["preprocess/count", "preprocess/bounds", "preprocess/histograms"]
    assert prepared.schema.private_statistics() == []
    for col in prepared.schema.columns:
        assert set(col.sources.values()) <= {"declared", "dp"}, col
    assert prepared.schema["amount"].sources["bounds"] == "dp"
    assert prepared.schema["group"].sources["categories"] == "declared"
    assert prepared.extractor.domain == [("a",), ("b",), ("rare",)]
    assert prepared.extractor.domain_source == "declared"
    assert "preprocess/bounds" in prepared.released and "amount.bounds" in prepared.released["preprocess/bounds"]


def test_fully_declared_bounds_skip_the_bounds_release(mixed_table, cfg):
    columns = {**DECLARED, "count": {"min": 0, "max": 20}, "amount": {"min": 0, "max": 5000},
               "score": {"min": -10, "max": 10}, "level": {"min": 1, "max": 3},
               "when": {"min": 1.5e9, "max": 1.7e9}}
    prep = prepare_private(mixed_table, cfg.replace(**{"data.columns": columns}), rng=_rng())
    assert [m.name for m in prep.ledger.mechanisms] == ["preprocess/count", "preprocess/histograms"]
    assert prep.schema["amount"].min == 0 and prep.schema["amount"].max == 5000


def test_bounds_are_not_moved_by_one_outlier(mixed_table, cfg):
    big = pd.concat([mixed_table] * 5, ignore_index=True)
    outlier = big.copy()
    outlier.loc[0, "amount"] = 1e12
    # the same noise draws for both tables (a test-only seed; a real release uses OS entropy)
    a = prepare_private(big, cfg, rng=np.random.default_rng(0)).schema["amount"]
    b = prepare_private(outlier, cfg, rng=np.random.default_rng(0)).schema["amount"]
    assert (a.min, a.max) == (b.min, b.max)
    assert b.max < 1e5  # never the raw maximum


def test_histogram_release_gives_quantiles_atoms_and_missingness(cfg):
    rng = np.random.default_rng(3)
    n = 20_000
    df = pd.DataFrame({
        "group": rng.choice(["a", "b"], size=n), "label": rng.choice(["no", "yes"], size=n),
        "spend": np.where(rng.random(n) < 0.4, 0.0, rng.gamma(2.0, 50.0, size=n)),
        "score": rng.normal(size=n),
    })
    df.loc[rng.random(n) < 0.1, "score"] = np.nan
    columns = {**DECLARED, "group": {"categories": ["a", "b"]}, "score": {"min": -5, "max": 5}}
    prep = prepare_private(df, cfg.replace(**{"data.columns": columns, "privacy.epsilon": 8.0}), rng=_rng())
    spend, score = prep.transformer.transforms["spend"], prep.transformer.transforms["score"]
    assert spend.atom == 0.0
    assert prep.schema["score"].has_missing and not prep.schema["spend"].has_missing
    true = np.nanquantile(df["score"], [0.1, 0.5, 0.9])
    levels = np.linspace(0, 1, len(score.quantiles))
    np.testing.assert_allclose(np.interp([0.1, 0.5, 0.9], levels, score.quantiles), true, atol=0.1)


def test_context_domain_from_released_integers(mixed_table, cfg):
    df = mixed_table.assign(wave=np.random.default_rng(0).integers(1, 4, len(mixed_table)))
    prep = prepare_private(df, cfg.replace(**{"context.columns": ["wave"]}), rng=_rng())
    assert prep.schema["wave"].kind == "categorical" and prep.schema["wave"].sources["categories"] == "dp"
    assert prep.extractor.domain == [(1,), (2,), (3,)] and prep.extractor.domain_source == "dp"


def test_wide_numeric_context_asks_for_declared_values(mixed_table, cfg):
    df = mixed_table.assign(year=np.random.default_rng(0).integers(1984, 1989, len(mixed_table)))
    with pytest.raises(ConfigError, match=r"data\.columns\.year\.categories"):
        prepare_private(df, cfg.replace(**{"context.columns": ["year"]}), rng=_rng())
    columns = {**DECLARED, "year": {"kind": "categorical", "categories": ["1984", "1985", "1986", "1987", "1988"]}}
    prep = prepare_private(df, cfg.replace(**{"context.columns": ["year"], "data.columns": columns}), rng=_rng())
    assert prep.extractor.domain == [(y,) for y in range(1984, 1989)]


def test_a_column_too_sparse_for_its_bounds_is_refused(cfg):
    df = pd.DataFrame({"group": ["a"] * 30, "label": ["no", "yes"] * 15, "x": np.arange(30.0)})
    with pytest.raises(PrivacyBudgetError, match="data.columns.x.min"):
        prepare_private(df, cfg.replace(**{"privacy.epsilon": 0.5}), rng=_rng())


def test_training_refuses_a_schema_read_from_raw_rows(mixed_table, cfg, prepared):
    x = prepared.transformer.encode(prepared.frame)
    ids = prepared.extractor.ids(prepared.frame)
    from cadasg_dist.model.networks import ModelDims

    dims = ModelDims(x.shape[1], prepared.extractor.n_contexts, prepared.transformer.spans, ())
    with pytest.raises(PrivacyBudgetError, match="raw rows"):
        fit_private(cfg, x, ids, dims, infer_schema(mixed_table, cfg.data))


def test_quantile_grid_ends_at_the_released_support_not_at_the_loose_bounds(cfg):
    # diamonds' depth: values 43-79, released bounds [32, 128]; the grid's last step used to run to
    # 128, and a generator that pushed rows to its edge put them at depth 100+
    rng = np.random.default_rng(5)
    n = 20_000
    df = pd.DataFrame({"group": rng.choice(["a", "b"], size=n), "label": rng.choice(["no", "yes"], size=n),
                       "depth": np.clip(rng.normal(61.8, 1.4, size=n), 43.0, 79.0)})
    prep = prepare_private(df, cfg.replace(**{"privacy.epsilon": 3.0}), rng=_rng())
    column, grid = prep.schema["depth"], prep.transformer.transforms["depth"].quantiles
    assert (column.min, column.max) == (32.0, 128.0)  # the bounds stay the release's (the clip range)
    assert 50.0 < grid[0] < grid[1] and grid[-2] < grid[-1] < 70.0


def test_support_keeps_a_thin_tail_and_drops_a_lone_noise_cell():
    std = 10.0
    mass = np.zeros(60)
    mass[10:20] = 500.0  # the body, far above 4 sd
    mass[[25, 30]] = 30.0  # a heaped thin tail: 2-4 sd, gaps of 4 empty cells
    mass[50] = 35.0  # a lone cell 19 empty cells further: noise that passed the 2 sd cut
    mass[3] = 25.0  # below the body, 6 empty cells away: kept
    kept = within_support(mass, std)
    assert np.flatnonzero(kept).tolist() == [3, *range(10, 20), 25, 30]
    assert within_support(np.full(5, 15.0), std).tolist() == [15.0] * 5  # nothing above 4 sd: unchanged


def test_a_lone_bin_past_the_threshold_is_noise_unless_far_past_it():
    # ~1,000 empty magnitude bins per fit: a lone one above 4 sd is noise 3 % of the time, and as a
    # bound it once put diamonds' table at 2^58 (every generated value ~1e16)
    std = 10.0
    counts = np.zeros(80)
    counts[10:13] = [45.0, 900.0, 300.0]  # a body: the 4.5-sd edge bin counts beside its neighbour
    counts[40] = 55.0  # alone at 5.5 sd: noise
    counts[60] = 65.0  # alone at 6.5 sd: rows (a zero bin far from the values, say)
    assert credible_cells(counts, std).tolist() == [10, 11, 12, 60]
    assert credible_cells(np.r_[0.0, 45.0, 0.0, 50.0], std).tolist() == [1, 3]  # nothing sure: all above 4 sd
    rng = np.random.default_rng(1)
    body = np.zeros(150)
    body[70:75] = 500.0
    noisy = body + rng.normal(0.0, std, size=(2_000, 150))  # 290,000 empty bins around a body
    assert all(credible_cells(row, std).tolist() == list(range(70, 75)) for row in noisy)


def _sparse_table(n: int = 600) -> pd.DataFrame:
    """Numeric columns too thin for a bounds release beside one that is not: 'income' and 'visits'
    hold a value in 3 rows each (distinctive values, to show that none is ever printed)."""
    rng = np.random.default_rng(2)
    thin = np.full(n, np.nan)
    df = pd.DataFrame({"group": rng.choice(["a", "b"], size=n), "label": rng.choice(["no", "yes"], size=n),
                       "score": rng.normal(size=n), "income": thin.copy(), "visits": thin.copy()})
    df.loc[:2, "income"] = [123457.0, 223459.0, 323461.0]
    df.loc[:2, "visits"] = [7771.0, 7773.0, 7777.0]
    return df


def test_every_column_without_released_bounds_is_named_in_one_error(cfg):
    df = _sparse_table()
    with pytest.raises(PrivacyBudgetError) as err:
        prepare_private(df, cfg.replace(**{"data.columns": DECLARED}), rng=_rng())
    message = str(err.value)
    assert "'income', 'visits'" in message and "'score'" not in message
    assert "data.columns.income.min/.max, data.columns.visits.min/.max" in message
    assert "privacy.unreleased_bounds: drop" in message
    for value in (*df["income"].dropna(), *df["visits"].dropna()):  # never a value read from the rows
        assert f"{value:g}" not in message and str(int(value)) not in message


def test_drop_mode_leaves_those_columns_out_with_a_warning(cfg, caplog):
    from cadasg_dist.synthesizer import CADASG

    df = _sparse_table()
    drop = cfg.replace(**{"data.columns": DECLARED, "privacy.unreleased_bounds": "drop"})
    with caplog.at_level("WARNING", logger="cadasg_dist.private.prepare"):
        prep = prepare_private(df, drop, rng=_rng())
    assert "'income', 'visits'" in caplog.text and "privacy.unreleased_bounds=drop" in caplog.text
    assert prep.schema.names == ["group", "label", "score"]
    assert {"income", "visits"} <= set(prep.schema.dropped) and "income" not in prep.schema.output_names
    assert prep.released["preprocess/bounds"] == ["score.bounds", "income.bounds", "visits.bounds"]  # all paid for
    model = CADASG(drop).fit(df)
    assert list(model.sample(30, seed=0).columns) == ["group", "label", "score"]


def test_drop_mode_never_leaves_out_the_target_or_a_context_column(cfg):
    df = _sparse_table().assign(label=lambda d: d["visits"])
    drop = cfg.replace(**{"data.columns": {"group": DECLARED["group"]}, "privacy.unreleased_bounds": "drop"})
    with pytest.raises(PrivacyBudgetError, match=r"'label', 'income'; .*; 'label' cannot be left out"):
        prepare_private(df.drop(columns=["visits"]), drop, rng=_rng())
