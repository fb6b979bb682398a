"""Streaming to a file and the size guard (issue 29 gap 4), the CLI's sampling flags."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cadasg_dist.cli import main
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.sampling import run


def test_sample_to_file_writes_row_groups_with_the_seed_and_equals_sample(tiny_model, tmp_path):
    out = tiny_model.sample_to_file(tmp_path / "s.parquet", 2_500, chunk=1_000, seed=11)
    meta = pq.ParquetFile(out.path)
    assert out.rows == 2_500 and out.seed == 11
    assert meta.metadata.num_row_groups == 3
    assert meta.schema_arrow.metadata[b"cadasg.seed"] == b"11"
    rows = pd.read_parquet(out.path)
    expected = tiny_model.sample(2_500, chunk=1_000, seed=11)
    pd.testing.assert_frame_equal(rows, expected, check_dtype=False)
    assert rows["group"].value_counts().to_dict() == expected["group"].value_counts().to_dict()


def test_csv_stream_has_a_sidecar_and_conditions(tiny_model, tmp_path):
    out = tiny_model.sample_to_file(tmp_path / "s.csv", 700, chunk=256, conditions={"label": "yes"})
    rows = pd.read_csv(out.path)
    assert len(rows) == 700 and set(rows["label"]) == {"yes"}
    meta = json.loads((tmp_path / "s.csv.meta.json").read_text())
    assert meta["cadasg.seed"] == str(out.seed) == str(tiny_model.last_seed)
    assert json.loads(meta["cadasg.conditions"]) == {"label": "yes"}


def test_a_failed_stream_leaves_no_file(tiny_model, tmp_path):
    with pytest.raises(InvalidDataError):
        tiny_model.sample_to_file(tmp_path / "s.parquet", 100, conditions={"score": 1e9})
    assert list(tmp_path.iterdir()) == []


def test_an_in_memory_request_too_large_is_refused(tiny_model, monkeypatch):
    monkeypatch.setattr(run, "available_memory", lambda: 10 * 2**20)
    with pytest.raises(InvalidDataError, match=r"more than the 0.0 GiB available; write them to a file"):
        tiny_model.sample(10_000_000)


def test_cli_streams_prints_the_seed_and_takes_conditions(tiny_model, tmp_path, capsys):
    model = tiny_model.save(tmp_path / "m")
    out = tmp_path / "x.parquet"
    assert main(["sample", str(model), "--n", "300", "--chunk", "128", "--condition", "label=no",
                 "--condition", "score=-1..1", "--context", "group=a", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    seed = int(err.split("seed: ")[1].split()[0])
    rows = pd.read_parquet(out)
    assert set(rows["label"]) == {"no"} and set(rows["group"]) == {"a"} and rows["score"].between(-1, 1).all()
    assert pq.ParquetFile(out).schema_arrow.metadata[b"cadasg.seed"] == str(seed).encode()
    again = tmp_path / "y.parquet"
    assert main(["sample", str(model), "--n", "300", "--chunk", "128", "--condition", "label=no", "--condition",
                 "score=-1..1", "--context", "group=a", "--seed", str(seed), "--out", str(again)]) == 0
    assert out.read_bytes() == again.read_bytes()


def test_cli_rejects_bad_sampling_flags_before_reading_the_model(tmp_path, capsys):
    missing = str(tmp_path / "none")
    for flags, message in ((["--num-workers", "-1"], "--num-workers must be 0"),
                           (["--chunk", "0"], "--chunk must be a positive"),
                           (["--num-workers", "2", "--out", str(tmp_path / "x.csv")], "Parquet parts into a directory"),
                           (["--condition", "age"], "--condition expects COLUMN=VALUE")):
        argv = ["sample", missing, "--n", "5", "--out", str(tmp_path / "x.parquet"), *flags]
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_cli_num_workers_calls_ray_sampling(tmp_path, monkeypatch, capsys):
    import sys
    import types

    calls = []
    fake = types.ModuleType("cadasg_dist.distributed.sampling")
    fake.sample_on_ray = lambda *a, **k: calls.append((a, k))
    monkeypatch.setitem(sys.modules, "cadasg_dist.distributed.sampling", fake)
    assert main(["sample", "m", "--n", "1000", "--num-workers", "2", "--seed", "5", "--condition", "label=yes",
                 "--context", "group=a", "--out", str(tmp_path / "parts")]) == 0
    assert calls == [(("m", 1000, str(tmp_path / "parts")),
                      {"num_workers": 2, "seed": 5, "conditions": {"group": "a", "label": "yes"}})]
