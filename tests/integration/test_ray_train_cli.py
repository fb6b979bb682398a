"""`cadasg train --num-workers N [--use-gpu] [--address A]` reaches fit_distributed with the flags
in ``cfg.distributed`` (Ray itself is replaced by a stub here: the real runs are the other tests)."""

from __future__ import annotations

import pytest

from cadasg_dist.cli import main


def test_num_workers_routes_training_to_ray(monkeypatch, tmp_path, mixed_table, tiny_model, capsys):
    import cadasg_dist.distributed.trainer as trainer

    seen = {}

    def fake_fit(model, data, *, progress=None, on_plan=None, **kwargs):
        seen["cfg"], seen["data"] = model.config, data
        on_plan("shard plan: 600 rows, 3 contexts, 2 workers")
        return tiny_model

    monkeypatch.setattr(trainer, "fit_distributed", fake_fit)
    data = tmp_path / "t.csv"
    mixed_table.to_csv(data, index=False)
    code = main(["train", str(data), "--target", "label", "--context", "group", "--num-workers", "2",
                 "--address", "ray://head:10001", "--use-gpu", "--out", str(tmp_path / "m")])
    assert code == 0
    d = seen["cfg"].distributed
    assert (d.num_workers, d.address, d.use_gpu) == (2, "ray://head:10001", True)
    assert seen["data"] == str(data) and (tmp_path / "m" / "meta.json").exists()
    assert "shard plan" in capsys.readouterr().err


def test_without_num_workers_training_stays_in_process(monkeypatch, tmp_path, mixed_table):
    import cadasg_dist.distributed.trainer as trainer

    monkeypatch.setattr(trainer, "fit_distributed", lambda *a, **k: pytest.fail("Ray was used"))
    data = tmp_path / "t.csv"
    mixed_table.head(200).to_csv(data, index=False)
    assert main(["train", str(data), "--target", "label", "--context", "group", "--epochs", "1",
                 "--set", "model.hidden=[16]", "--out", str(tmp_path / "m")]) == 0


def test_a_bad_worker_count_is_one_line_and_exit_2(tmp_path, mixed_table, capsys):
    data = tmp_path / "t.csv"
    mixed_table.to_csv(data, index=False)
    code = main(["train", str(data), "--target", "label", "--num-workers", "-1", "--out", str(tmp_path / "m")])
    assert code == 2 and "--num-workers -1: use 0 to train in this process" in capsys.readouterr().err
