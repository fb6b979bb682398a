"""The networks' conditioning: strata from encoded rows (thin target classes merged), and the
decoder's stratum input."""

from __future__ import annotations

import numpy as np
import torch

from cadasg_dist.config import ModelConfig
from cadasg_dist.data.schema import ColumnSchema
from cadasg_dist.data.transforms import CategoricalTransform, SpanInfo
from cadasg_dist.model.networks import CADASGNetworks, ModelDims, class_groups
from cadasg_dist.private.prepare import target_class_groups
from cadasg_dist.train.step import pin_stratum

SPANS = (SpanInfo("a", "continuous", 0, 1), SpanInfo("y", "softmax", 1, 2, "atom"), SpanInfo("y", "continuous", 3, 1))


def _dims(stratum_input: bool = True) -> ModelDims:
    return ModelDims(4, 3, SPANS, SPANS[1:], SPANS[1], SPANS[2], target_bins=5, stratum_input=stratum_input)


def test_stratum_is_class_times_bins_plus_the_value_bin():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 1, generator=g), torch.eye(2)[torch.randint(0, 2, (200,), generator=g)],
                   torch.randn(200, 1, generator=g)], dim=1)
    edges = torch.distributions.Normal(0.0, 1.0).icdf(torch.arange(1, 5) / 5)
    expected = x[:, 1:3].argmax(1) * 5 + torch.bucketize(x[:, 3].contiguous(), edges)
    dims = _dims()
    assert torch.equal(dims.stratum(x), expected)
    context = torch.randint(0, 3, (200,), generator=g)
    assert torch.equal(dims.cells(x, context), context * 10 + expected)


def test_decoder_reads_the_stratum_and_old_dims_load_without_it():
    dims = _dims()
    assert dims.decoder_condition == 3 + 10
    onehot = torch.eye(3)[[0, 0]]
    cond = dims.condition(onehot, torch.tensor([2, 7]))
    assert torch.equal(cond[:, 3:].argmax(1), torch.tensor([2, 7])) and torch.equal(cond[:, :3], onehot)
    torch.manual_seed(0)
    nets = CADASGNetworks(dims, ModelConfig(latent_dim=4, hidden=(16,), utility_hidden=(16,)))
    z = torch.zeros(2, 4)
    out = nets.decoder(z, cond)
    assert not torch.allclose(out[0], out[1])  # same z and context, another stratum: another row
    old = dims.to_dict()
    del old["stratum_input"]  # an artifact written before the decoder read strata
    legacy = ModelDims.from_dict(old)
    assert not legacy.stratum_input and legacy.decoder_condition == 3
    assert torch.equal(legacy.condition(onehot, torch.tensor([2, 7])), onehot)
    assert ModelDims.from_dict(dims.to_dict()) == dims


# --- a categorical target's thin classes merged into one stratum -----------------------------------

CLASS_SPANS = (SpanInfo("a", "continuous", 0, 1), SpanInfo("y", "softmax", 1, 4, "value"))


def test_thin_classes_join_their_smaller_neighbour_until_each_group_reaches_the_floor():
    assert class_groups(np.array([14358.0, 1107.0, 185.0, 38.0]), 248.0) == (0, 1, 1, 1)  # rwm5yr at ε = 3
    assert class_groups(np.array([14358.0, 1107.0, 185.0, 38.0]), 100.0) == (0, 1, 2, 2)
    assert class_groups(np.array([40.0, 5000.0, 50.0]), 100.0) == (0, 0, 1)  # the smaller neighbour
    assert class_groups(np.array([10.0, 10.0, 10.0, 10.0]), 100.0) == (0, 0, 1, 1)  # two groups always stay
    assert class_groups(np.array([5000.0, 900.0, 150.0]), 100.0) is None  # nothing thin
    assert class_groups(np.array([5000.0, 90.0]), 100.0) is None  # a binary target is never merged


def test_a_missing_target_slot_keeps_its_own_stratum():
    t = CategoricalTransform(ColumnSchema("y", "categorical", "int64", True, categories=(0, 1, 2, 3)))
    t.frequencies = [0.80, 0.15, 0.002, 0.001, 0.047]  # the missing slot comes last
    assert target_class_groups(t, n_contexts=10, n_rows=10_000, floor=10.0) == [0, 1, 1, 1, 2]
    assert target_class_groups(t, n_contexts=10, n_rows=10_000, floor=0.0) is None  # privacy.merge_class_sds = 0
    t.frequencies = [0.80, 0.15, 0.03, 0.019, 0.001]
    assert target_class_groups(t, n_contexts=10, n_rows=10_000, floor=10.0) is None  # only the missing slot is thin


def test_merged_classes_share_a_stratum_and_the_pin_keeps_the_decoder_choice_inside_the_group():
    dims = ModelDims(5, 2, CLASS_SPANS, CLASS_SPANS[1:], CLASS_SPANS[1], class_groups=(0, 1, 1, 1),
                     stratum_input=True)
    assert (dims.classes, dims.groups, dims.strata) == (4, 2, 2)
    x = torch.cat([torch.zeros(4, 1), torch.eye(4)], dim=1)  # one row of each class
    assert dims.stratum(x).tolist() == [0, 1, 1, 1]
    assert ModelDims.from_dict(dims.to_dict()) == dims
    assert ModelDims.from_dict({**dims.to_dict(), "class_groups": None}).strata == 4  # an artifact from before
    rows = torch.tensor([[0.5, 0.1, 0.6, 0.2, 0.1], [0.5, 0.7, 0.0, 0.0, 0.0]])
    pinned = pin_stratum(rows, torch.tensor([1, 3]), dims)  # cells: context 0 group 1, context 1 group 1
    assert torch.allclose(pinned[0], torch.tensor([0.5, 0.0, 0.6 / 0.9, 0.2 / 0.9, 0.1 / 0.9]))
    assert torch.allclose(pinned[1], torch.tensor([0.5, 0.0, 1 / 3, 1 / 3, 1 / 3]))  # no mass there: uniform
    assert torch.equal(pin_stratum(rows, torch.tensor([0, 2]), dims)[:, 1:], torch.tensor([[1.0, 0, 0, 0]] * 2))
