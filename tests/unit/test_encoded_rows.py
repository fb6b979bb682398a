"""``EncodedRows`` (how a Ray worker holds its shard): any index gives back exactly the rows the
transformer encoded, in a fraction of their float32 size; a span that is not one-hot makes the
store keep rows whole, without losing the rows before it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadasg_dist.train.rows import EncodedRows


@pytest.fixture(scope="module")
def encoded(tiny_model, mixed_table):
    transformer = tiny_model.transformer
    return transformer, transformer.encode(mixed_table, seed=0).astype(np.float32)


def test_rows_come_back_bit_for_bit_from_a_compact_store(encoded):
    transformer, x = encoded
    rows = EncodedRows(transformer.spans, x.shape[1], capacity=100)  # grows past its capacity
    for part in np.array_split(x, 4):
        rows.append(part)
    assert rows.compact and len(rows) == len(x) and rows.shape == x.shape
    assert rows.nbytes() < x.nbytes / 2
    index = np.random.default_rng(0).permutation(len(x))[:257]
    for key in (index, torch.from_numpy(index), slice(10, 300, 7)):
        got = rows[key]
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), x[key if not isinstance(key, torch.Tensor) else index])
    got = rows[index]
    got += 1.0  # a batch is a fresh array: changing it leaves the store alone
    np.testing.assert_array_equal(rows[index].numpy(), x[index])
    with pytest.raises(IndexError):
        rows[np.array([len(x)])]


def test_a_span_that_is_not_one_hot_keeps_every_row_whole(encoded):
    transformer, x = encoded
    rows = EncodedRows(transformer.spans, x.shape[1])
    rows.append(x[:300])
    assert rows.compact
    soft = x[300:].copy()
    span = next(s for s in transformer.spans if s.kind == "softmax")
    soft[:, span.start:span.start + span.width] = 1.0 / span.width  # e.g. a smoothed encoding
    rows.append(soft)
    assert not rows.compact and len(rows) == len(x)
    np.testing.assert_array_equal(rows[:300].numpy(), x[:300])
    np.testing.assert_array_equal(rows[300:].numpy(), soft)
