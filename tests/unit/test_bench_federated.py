"""bench/federated.py builds the plan-round plan the way ``cadasg federated`` does, so that its
comparison with the pooled plan is between two draws of one plan, nothing else."""

from __future__ import annotations

import numpy as np

from bench.federated import make_plan
from cadasg_dist.config import CADASGConfig
from tests.unit.test_federated_privacy import FED, private_config


def test_the_benchs_plan_round_keeps_an_integer_silo_columns_categories(mixed_table, tiny_config):
    """rwm5yr's silos are its years, declared as integers: the plan round's schema and contexts
    must hold the integers the pooled plan holds (not their text)."""
    table = mixed_table.assign(site=np.random.default_rng(3).choice([1984, 1985, 1986], size=len(mixed_table)))
    raw = private_config(tiny_config, epsilon=8.0).to_dict()
    raw["data"]["columns"]["site"] = {"kind": "categorical", "categories": [1984, 1985, 1986]}
    raw["context"]["columns"] = ["group", "site"]
    cfg = CADASGConfig.from_dict(raw)
    pooled, rounded = (make_plan(kind, table, "site", cfg, FED) for kind in ("pooled", "federated"))
    assert [(c.name, c.kind, c.dtype, c.categories) for c in rounded.schema.columns] == \
        [(c.name, c.kind, c.dtype, c.categories) for c in pooled.schema.columns]
    assert rounded.schema["site"].categories == (1984, 1985, 1986)
    assert rounded.extractor.to_dict()["domain"] == pooled.extractor.to_dict()["domain"]
