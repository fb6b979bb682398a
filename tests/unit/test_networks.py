"""The networks' conditioning: strata from encoded rows, and the decoder's stratum input."""

from __future__ import annotations

import torch

from cadasg_dist.config import ModelConfig
from cadasg_dist.data.transforms import SpanInfo
from cadasg_dist.model.networks import CADASGNetworks, ModelDims

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
    nets = CADASGNetworks(dims, ModelConfig(latent_dim=4, hidden=(16,)))
    z = torch.zeros(2, 4)
    out = nets.decoder(z, cond)
    assert not torch.allclose(out[0], out[1])  # same z and context, another stratum: another row
    old = dims.to_dict()
    del old["stratum_input"]  # an artifact written before the decoder read strata
    legacy = ModelDims.from_dict(old)
    assert not legacy.stratum_input and legacy.decoder_condition == 3
    assert torch.equal(legacy.condition(onehot, torch.tensor([2, 7])), onehot)
    assert ModelDims.from_dict(dims.to_dict()) == dims
