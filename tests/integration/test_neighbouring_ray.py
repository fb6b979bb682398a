"""The guarantee's own regression test on Ray Train with 2 workers: a private run on a table and on
the same table plus one odd row differs only in noisy numbers (the driver's releases are seeded
alike; the workers draw real entropy in their own processes, so a number that moves with the noise
moves between every pair of runs, and one that does not is exact)."""

from __future__ import annotations

import logging
import re
import warnings

import pytest
import yaml

from cadasg_dist.cli import main
from cadasg_dist.data.codebook import Codebook
from tests.neighbours import artifact_view, exact_channels, lines_view, seeded_secrets
from tests.unit.test_neighbouring_tables import odd_row

pytestmark = pytest.mark.integration
RAY_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d+\s+(INFO|WARNING)\s+\S+\.py:\d+ -- ")


def ray_run(tmp_path, table, seed: int, name: str, capsys, caplog) -> dict:
    data = tmp_path / f"{name}.parquet"
    table.to_parquet(data)
    caplog.clear()
    with seeded_secrets(seed), caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["train", str(data), "--target", "label", "--context", "group", "--epsilon", "4",
                     "--num-workers", "2", "--config", str(tmp_path / "config.yaml"),
                     "--codebook", str(tmp_path / "codebook.yaml"), "--set",
                     f"distributed.storage_path={tmp_path / 'ray'}", "--out", str(tmp_path / f"{name}-model")])
    out = capsys.readouterr()
    assert code == 0, out.err
    logged = "\n".join([f"{r.levelname} {r.name} {r.getMessage()}" for r in caplog.records
                        if r.name.startswith("cadasg_dist")]
                       + [f"{w.category.__name__} {w.message}" for w in caught if "cadasg_dist" in w.filename])
    # Ray's own console lines ("2026-... WARNING resource_manager.py:169 -- ...") are about the Ray
    # session (its first run warns once about the object store): left out; the driver keeps Ray
    # Data's INFO lines and progress bars off its console (distributed.worker.quiet_console)
    printed = "\n".join(line for line in (out.out + out.err).splitlines() if not RAY_LINE.match(line))
    return {"artifact": artifact_view(tmp_path / f"{name}-model"),
            "lines": lines_view((printed + "\n" + logged).replace(name, "RUN"))}


def test_two_workers_leak_no_exact_number(ray_session, tmp_path, mixed_table, tiny_config, capsys, caplog):
    cfg = tiny_config.replace(**{"train.epochs": 1, "train.batch_size": 100})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    Codebook.detect(mixed_table).to_yaml(tmp_path / "codebook.yaml")
    base = ray_run(tmp_path, mixed_table, 7, "run-a", capsys, caplog)
    neighbour = ray_run(tmp_path, odd_row(mixed_table), 7, "run-b", capsys, caplog)
    reseeded = ray_run(tmp_path, mixed_table, 9, "run-c", capsys, caplog)
    assert base["artifact"]["meta.json"]["distributed"]["workers"] == 2
    found = exact_channels(base, neighbour, reseeded)
    assert found == [], "\n".join(found)
