"""What a Ray Train worker's console shows: our epoch lines and warnings, not Ray's INFO chatter."""

import logging

from cadasg_dist.distributed.worker import _NoRayInfo
from cadasg_dist.train.fit import EpochReport
from cadasg_dist.train.progress import epoch_line, line_due


def _record(path: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("x", level, path, 1, "msg", None, None)


def test_ray_train_and_data_info_records_are_dropped_warnings_kept():
    keep = _NoRayInfo().filter
    site = "/venv/lib/python3.11/site-packages/ray"
    assert not keep(_record(f"{site}/train/v2/_internal/execution/context.py", logging.INFO))
    assert not keep(_record(f"{site}/data/_internal/logging.py", logging.INFO))
    assert keep(_record(f"{site}/train/v2/_internal/execution/context.py", logging.WARNING))
    assert keep(_record("/work/cadasg_dist/distributed/worker.py", logging.INFO))


def test_progress_lines_are_due_about_ten_times_a_run():
    due = [e for e in range(1, 80) if line_due(EpochReport(e, 79, 1.0, {}))]
    assert due[0] == 1 and due[-1] == 79 and 10 <= len(due) <= 13
    assert "epoch 7/79" in epoch_line(EpochReport(7, 79, 1.0, {"loss_vae": 2.0}))
