"""The sampling pack: the decoder folded per cell and run on numpy gives the torch networks' own
activated output; a saved model carries the pack, so a model loaded for sampling only (no torch)
draws exactly the rows of the ``CADASG`` it was saved from; an artifact without the pack still
loads (its pack folded again)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cadasg_dist.errors import ArtifactError
from cadasg_dist.model.networks import activate
from cadasg_dist.sampled import SampledModel, load_for_sampling
from cadasg_dist.sampling.fold import build_pack
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.train.step import Priors, pin_stratum


def test_the_folded_numpy_decoder_equals_the_torch_networks(tiny_model):
    model = tiny_model
    dims, nets = model.dims, model.nets
    pack = build_pack(nets, model.cache, model.config.model.latent_dim)
    cell = np.random.default_rng(3).integers(0, len(pack.shift), 5000)
    rows, order = pack.activated(cell, dims, np.random.default_rng(4))
    # the same latent noise through the torch networks, row by row in the pack's (sorted) order
    eps = torch.from_numpy(np.random.default_rng(4).standard_normal((len(cell), pack.latent), dtype=np.float32))
    sorted_cell = torch.from_numpy(cell[order])
    priors = Priors.from_cache(model.cache, model.config.model.latent_dim)
    z = priors.latent_mean[sorted_cell] + torch.einsum("bl,bkl->bk", eps, priors.latent_chol[sorted_cell])
    with torch.no_grad():
        cond = dims.condition(nets.one_hot(sorted_cell // dims.strata), sorted_cell % dims.strata)
        expected = pin_stratum(activate(nets.decoder(z, cond), dims.spans, tau=None), sorted_cell, dims)
    assert np.allclose(rows, expected.numpy(), atol=2e-5)


def test_the_fused_decoder_is_the_same_function_whatever_the_signs_of_the_gains():
    """``Fused`` centres the linear layers before a norm and moves positive norm gains into the next
    layer; a norm with a gain <= 0 keeps its gain. The output is the pack's own layers' output."""
    from cadasg_dist.model.dims import ModelDims
    from cadasg_dist.sampling.pack import Fused, SamplingPack

    rng = np.random.default_rng(0)
    cells, latent, hidden, out = 3, 4, 16, 5
    signed = rng.normal(size=hidden).astype(np.float32)  # some gains negative: not moved
    positive = rng.uniform(0.5, 2.0, size=hidden).astype(np.float32)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    layers = [("layer_norm", (signed, f32(hidden)), 1e-5), ("leaky_relu", (), 0.2),
              ("linear", (f32(hidden, hidden), f32(hidden)), 0.0),
              ("layer_norm", (positive, f32(hidden)), 1e-5), ("leaky_relu", (), 0.2)]
    pack = SamplingPack(f32(cells, latent, hidden), f32(cells, hidden) + 3.0, layers, f32(out, hidden), f32(out),
                        np.arange(out), [], np.ones(cells))
    fused = pack.fused()
    assert [kind for kind, _, _ in fused.layers] == ["centred_norm", "leaky_relu", "linear", "centred_norm",
                                                      "leaky_relu"]
    assert fused.layers[0][1][0] is not None and fused.layers[3][1][0] is None
    plain = SamplingPack(pack.scale, pack.shift, layers, pack.head_w, pack.head_b, pack.unperm, [], pack.cell_counts)
    plain._fused = Fused(pack.scale, pack.shift, layers, pack.head_w)  # the layers as they are
    dims = ModelDims(features=out, contexts=cells, spans=(), target_spans=())
    cell = rng.integers(0, cells, 2000)
    got, order = pack.activated(cell, dims, np.random.default_rng(1))
    want, same = plain.activated(cell, dims, np.random.default_rng(1))
    assert np.array_equal(order, same)
    assert np.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_a_model_loaded_for_sampling_draws_the_rows_of_the_saved_model(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "m")
    index = json.loads((path / "sampler.json").read_text())
    assert index["calibrated_for"] is not None  # the calibration is fitted before saving: loading never fits it
    light = load_for_sampling(path)
    assert isinstance(light, SampledModel) and not hasattr(light, "nets")
    whole = CADASG.load(path)
    draws = ({"seed": 11}, {"seed": 12, "context": {"group": "rare"}}, {"seed": 13, "conditions": {"label": "yes"}})
    for kwargs in draws:
        expected = tiny_model.sample(700, **kwargs)
        pd.testing.assert_frame_equal(light.sample(700, **kwargs), expected)
        pd.testing.assert_frame_equal(whole.sample(700, **kwargs), expected)
    assert light.contexts == tiny_model.contexts and light.epsilon == tiny_model.epsilon
    pd.testing.assert_frame_equal(light.loss_history(), tiny_model.loss_history())
    written = light.sample_to_file(tmp_path / "rows.parquet", 1000, seed=5, chunk=300)
    assert written.rows == 1000
    expected = tiny_model.sample(1000, seed=5, chunk=300)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "rows.parquet"), expected, check_dtype=False)


def test_an_artifact_without_the_pack_loads_whole_and_folds_it_again(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "m")
    for name in ("sampler.json", "sampler.safetensors"):
        (path / name).unlink()
    sums = json.loads((path / "checksums.json").read_text())
    (path / "checksums.json").write_text(json.dumps({k: v for k, v in sums.items() if not k.startswith("sampler.")}))
    older = load_for_sampling(path)
    assert isinstance(older, CADASG)
    pd.testing.assert_frame_equal(older.sample(500, seed=2), tiny_model.sample(500, seed=2))


def test_a_damaged_pack_is_one_artifact_error(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "m")
    index = json.loads((path / "sampler.json").read_text())
    index["layers"] = index["layers"][:1] + [["softplus", 0, 0.0]]
    (path / "sampler.json").write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="sampler.json does not match its checksum"):
        load_for_sampling(path)
