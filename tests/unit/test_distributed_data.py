"""The data plane's pieces that need no running Ray: streaming a shard into one encoded buffer,
reading routed Parquet parts, and splitting sample rows over contexts and workers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray")

from cadasg_dist.distributed.data import ParquetShard, RouteRows, load_shard  # noqa: E402
from cadasg_dist.distributed.plan import make_plan  # noqa: E402
from cadasg_dist.distributed.sampling import largest_remainder  # noqa: E402
from cadasg_dist.errors import InvalidDataError  # noqa: E402


class Frames:
    """A stand-in for a DataIterator: fixed pandas batches."""

    def __init__(self, frames: list[pd.DataFrame]) -> None:
        self.frames = frames

    def iter_batches(self, batch_format: str = "pandas", batch_size: int = 0):
        yield from self.frames


def encode(batch: pd.DataFrame, i: int) -> np.ndarray:
    return np.stack([batch["x"].to_numpy(), np.full(len(batch), i)], axis=1).astype(np.float32)


def ids(batch: pd.DataFrame) -> np.ndarray:
    return batch["c"].to_numpy(np.int64)


def test_load_shard_concatenates_batches_in_order_and_grows_past_the_planned_rows():
    frames = [pd.DataFrame({"x": np.arange(a, b, dtype=float), "c": np.arange(a, b) % 3}) for a, b in
              [(0, 700), (700, 700), (700, 2500)]]
    rows, c = load_shard(Frames(frames), encode, ids, expected_rows=10)  # far fewer than arrive: must grow
    x = rows[:].numpy()
    assert x.dtype == np.float32 and x.shape == (2500, 2) == rows.shape
    np.testing.assert_array_equal(x[:, 0], np.arange(2500))
    np.testing.assert_array_equal(x[:, 1], [0] * 700 + [2] * 1800)  # the empty batch 1 is skipped
    np.testing.assert_array_equal(c, np.arange(2500) % 3)


def test_load_shard_of_no_rows_names_the_fix():
    with pytest.raises(InvalidDataError, match="fewer workers"):
        load_shard(Frames([pd.DataFrame({"x": [], "c": []})]), encode, ids, expected_rows=5)


def test_parquet_shard_streams_its_directory_in_batches(tmp_path):
    for i in range(3):
        pd.DataFrame({"x": np.arange(i * 100, i * 100 + 100, dtype=float), "c": 0}).to_parquet(
            tmp_path / f"p{i}.parquet", index=False)
    batches = list(ParquetShard(str(tmp_path)).iter_batches(batch_size=64))
    assert all(len(b) <= 64 for b in batches)
    assert sorted(pd.concat(batches)["x"]) == list(range(300))


def test_route_rows_tags_every_row_with_the_worker_the_plan_gives_it(mixed_table, tiny_config):
    from cadasg_dist.synthesizer import CADASG

    model = CADASG(tiny_config)
    prepared = model.prepare(mixed_table)
    plan = make_plan(np.bincount(prepared.ids, minlength=model.extractor.n_contexts), 2)
    args = (plan.to_dict(), model.schema.to_dict(), model.extractor.to_dict())
    tagged = RouteRows(*args, None)(mixed_table)
    assert len(tagged) == len(mixed_table)
    for w in range(2):
        mine = RouteRows(*args, w)(mixed_table)
        assert len(mine) == int((tagged["cadasg_worker"] == w).sum())


def test_largest_remainder_sums_to_n_in_proportion():
    out = largest_remainder(np.array([5.0, 3.0, 2.0, 0.0]), 7)
    assert out.sum() == 7 and out[3] == 0 and list(out) == [4, 2, 1, 0]
