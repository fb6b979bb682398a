"""Private training end to end: the budget is never exceeded, the artifact's ledger recomputes to
the training-time ε, training stops before the budget, the cache noise is really there, the DP
gradients are the library's losses clipped and noised, and the privacy unit caps rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cadasg_dist.config import CacheConfig, CADASGConfig
from cadasg_dist.context.cache import CacheStats, ContextCache
from cadasg_dist.errors import PrivacyBudgetError
from cadasg_dist.model.losses import critic_real_loss
from cadasg_dist.model.networks import CADASGNetworks, ModelDims
from cadasg_dist.privacy import PrivacyLedger, recompute_epsilon
from cadasg_dist.privacy.analysis import epsilon_from_history
from cadasg_dist.private import step as private_step
from cadasg_dist.private.budget import BudgetPlan, cache_noise, default_delta, plan_budget
from cadasg_dist.private.sampling import UnitSampler
from cadasg_dist.private.step import REAL_ROW_METRICS, DPState, PrivateBatch
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.train.step import vae_terms

DECLARED = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}
BOUNDED = {**DECLARED, "count": {"min": 0, "max": 20}, "amount": {"min": 0, "max": 5000},
           "score": {"min": -10, "max": 10}, "level": {"min": 1, "max": 3}, "when": {"min": 1.5e9, "max": 1.7e9}}


@pytest.fixture(scope="module")
def private_config(tiny_config):
    # score's rows spread over many magnitude bins: its bounds release fails about once in a
    # thousand draws at this budget, so it is declared; the other numeric bounds are released
    return tiny_config.replace(**{"privacy.epsilon": 4.0,
                                  "data.columns": {**DECLARED, "score": BOUNDED["score"]}})


@pytest.fixture(scope="module")
def private_model(mixed_table, private_config):
    return CADASG(private_config).fit(mixed_table)


def test_epsilon_recomputed_from_the_artifact_equals_training(private_model, tmp_path):
    out = private_model.save(tmp_path / "model")
    saved = json.loads((out / "ledger.json").read_text())
    spent = private_model.ledger.epsilon()
    assert spent <= 4.0
    assert recompute_epsilon(saved) == pytest.approx(spent, abs=1e-9)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["private"] is True
    assert meta["privacy"]["stopped_early"] is False
    assert meta["privacy"]["steps_taken"] == meta["privacy"]["steps_planned"]
    assert CADASG.load(out).sample(50, seed=1).shape[0] == 50


def test_ledger_lists_every_mechanism(private_model):
    names = [m.name for m in private_model.ledger.mechanisms]
    assert names == ["preprocess/count", "preprocess/bounds", "preprocess/histograms",
                     "train_step[dpsgd/critic,dpsgd/utility,dpsgd/vae,cache/ema]", "cache/final"]
    step = private_model.ledger.mechanisms[3]
    report = private_model.meta["privacy"]
    released = private_model.meta["training_rows"]  # q follows the released count, not the exact 600
    assert step.steps == report["steps_taken"] and step.sample_rate == pytest.approx(128 / released)
    parts = report["noise_multipliers"]
    # the parts of a step compose to its recorded multiplier: σ_step⁻² = Σ σ_i⁻²
    inverse = sum(parts[n] ** -2 for n in ("dpsgd/critic", "dpsgd/utility", "dpsgd/vae", "cache/ema"))
    assert inverse ** -0.5 == pytest.approx(step.noise_multiplier)


def test_history_holds_no_metric_computed_on_real_rows(private_model):
    assert private_model.history
    for row in private_model.history:
        assert not set(REAL_ROW_METRICS) & set(row)


def test_training_stops_before_the_budget(mixed_table, private_config, caplog):
    # declared bounds: this budget leaves the bounds release too little to be sure of finding them
    cfg = private_config.replace(**{"privacy.epsilon": 3.0, "privacy.noise_multiplier": 2.0, "train.epochs": 20,
                                    "data.columns": BOUNDED})
    model = CADASG(cfg).fit(mixed_table)
    report = model.meta["privacy"]
    assert report["stopped_early"] and "would exceed" in report["stop_reason"]
    assert "stopped early" in caplog.text
    assert len(model.history) < 20
    assert model.ledger.epsilon() <= 3.0
    assert model.ledger.mechanisms[-1].name == "cache/final"  # the reserved final pass still happened
    q = next(m for m in model.ledger.mechanisms if m.name.startswith("train_step")).sample_rate
    one_more = [m.history_entry() for m in model.ledger.mechanisms] + [(2.0, q, 1)]
    assert epsilon_from_history(one_more, delta=model.ledger.delta) > 3.0  # stopped at the last step that fit


def test_budget_below_one_step_is_refused(mixed_table, private_config):
    cfg = private_config.replace(**{"privacy.epsilon": 0.3, "privacy.noise_multiplier": 0.2})
    with pytest.raises(PrivacyBudgetError, match="single training step"):
        CADASG(cfg).fit(mixed_table)


def test_non_private_run_is_flagged(tiny_model):
    assert not tiny_model.ledger.private and math.isinf(tiny_model.epsilon)
    assert tiny_model.meta["private"] is False and "privacy" not in tiny_model.meta


def test_default_delta_is_1e5_or_one_over_n_squared():
    assert default_delta(100) == 1e-5
    assert default_delta(19_609) == pytest.approx(1 / 19_609**2)


def test_plan_never_overshoots_and_shares_the_renyi_budget(private_config):
    cfg = private_config.replace(**{"train.epochs": 30})
    plan = plan_budget(cfg, n_rows=5000, n_units=5000, has_utility=True,
                       preprocessing=["preprocess/bounds", "preprocess/histograms"])
    history = [(s, 1.0, 1) for s in plan.full_pass.values()] + [(plan.step_sigma, plan.sample_rate, plan.steps)]
    eps = epsilon_from_history(history, delta=plan.delta)
    assert 0.98 * 4.0 <= eps <= 4.0
    # at the planning order, the final cache pass takes its 10% share of the Rényi budget
    budget = 4.0 + (math.log(plan.delta) + math.log(plan.order)) / (plan.order - 1) - math.log(
        (plan.order - 1) / plan.order)
    assert plan.order / (2 * plan.full_pass["cache/final"] ** 2) == pytest.approx(0.1 * budget)
    auto = plan_budget(cfg.replace(**{"train.epochs": 0}), n_rows=5000, n_units=5000, has_utility=True)
    assert auto.steps == auto.steps_per_epoch * cfg.replace(**{"train.epochs": 0}).resolved_epochs(5000)


# --- the cache's Gaussian mechanism ----------------------------------------------------------

def _cache_stats(contexts: int = 40, dim: int = 6, latent: int = 3) -> CacheStats:
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(2000, dim, generator=g), torch.randn(2000, latent, generator=g)
    c = torch.randint(0, contexts, (2000,), generator=g)
    return CacheStats.from_batch(x, z, torch.rand(2000, latent, generator=g), c, contexts, 3.0, 2.0)


def _release(stats: CacheStats, config: CacheConfig, seed: int) -> CacheStats:
    cache = ContextCache(stats.n.shape[0], stats.sx.shape[1], stats.sz.shape[1], config)
    cache.update(stats, torch.Generator().manual_seed(seed), alpha=1.0)
    return cache.stats


def test_cache_releases_differ_with_the_calibrated_std():
    stats = _cache_stats()
    config = cache_noise(CacheConfig(clip_x=3.0, clip_z=2.0), sigma=1.5, rows_per_unit=2)
    a, b = _release(stats, config, 1), _release(stats, config, 2)
    per_block = 1.5 * math.sqrt(6) * 2  # six blocks at σ·√6 each, sensitivity ×2 rows per unit
    expected = {"n": per_block, "sx": per_block * 3.0, "sz": per_block * 2.0, "svar": per_block * 2.0,
                "sxx": per_block * 9.0, "szz": per_block * 4.0}
    for name, std in expected.items():
        diff = (getattr(a, name) - getattr(b, name)).flatten() / math.sqrt(2)
        if name in ("sxx", "szz"):  # symmetric noise: the upper triangle is the release
            d = getattr(a, name).shape[-1]
            rows, cols = torch.triu_indices(d, d)
            diff = ((getattr(a, name) - getattr(b, name))[:, rows, cols] / math.sqrt(2)).flatten()
        assert float(diff.std()) == pytest.approx(std, rel=0.2), name


def test_cache_without_privacy_adds_no_noise():
    stats = _cache_stats()
    quiet = CADASGConfig().resolved().cache  # no sigma: the non-private cache
    a, b = _release(stats, quiet, 1), _release(stats, quiet, 2)
    for name, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[name], rtol=0, atol=0)


# --- the DP gradient hooks are the library's losses, clipped and noised ----------------------

def _dims() -> ModelDims:
    from cadasg_dist.data.transforms import SpanInfo

    spans = (SpanInfo("a", "continuous", 0, 1), SpanInfo("b", "softmax", 1, 3), SpanInfo("y", "softmax", 4, 2))
    # the target y stratifies, and the decoder reads each row's stratum (computed inside the vmap)
    return ModelDims(6, 3, spans, (spans[2],), spans[2], stratum_input=True)


def _state(tiny_config, clip: float = 1e3) -> tuple[CADASGNetworks, DPState]:
    torch.manual_seed(0)
    nets = CADASGNetworks(_dims(), tiny_config.model)
    parts = {"dpsgd/critic": 1e-9, "dpsgd/utility": 1e-9, "dpsgd/vae": 1e-9, "cache/ema": 1e-9}
    plan = BudgetPlan(epsilon=1.0, delta=1e-5, order=10.0, sample_rate=0.5, steps_per_epoch=2, steps=2,
                      full_pass={}, step_sigma=1e-9, parts=parts)
    cfg = tiny_config.replace(**{"privacy.max_grad_norm": clip})
    dp = DPState(cfg, plan, PrivacyLedger(delta=1e-5), n_units=16, has_utility=True, strata=1, n_cells=3, seed=0)
    return nets, dp


def _batch(n: int = 8) -> tuple[PrivateBatch, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(n, 1, generator=g), torch.eye(3)[torch.randint(0, 3, (n,), generator=g)],
                   torch.eye(2)[torch.randint(0, 2, (n,), generator=g)]], dim=1)
    context = torch.randint(0, 3, (n,), generator=g)
    return PrivateBatch(x, context), torch.nn.functional.one_hot(context, 3).float()


def test_dp_critic_gradient_is_the_critic_loss_summed_over_the_expected_batch(tiny_config):
    nets, dp = _state(tiny_config)
    batch, onehot = _batch()
    fake, alpha = torch.rand_like(batch.x), torch.rand(len(batch.x))
    dp.privatize_critic(nets, batch, fake, onehot, alpha, tiny_config)
    private = {n: p.grad.clone() for n, p in nets.critic.named_parameters()}
    nets.critic.zero_grad()
    loss = nets.critic(fake, onehot) + critic_real_loss(nets.critic, batch.x, fake, onehot, alpha,
                                                        tiny_config.loss.gradient_penalty)
    (loss.sum() / dp.expected_units).backward()
    for name, p in nets.critic.named_parameters():
        torch.testing.assert_close(private[name], p.grad, atol=1e-5, rtol=1e-4)


def test_dp_vae_gradient_is_vae_terms_and_clipping_bounds_each_unit(tiny_config):
    nets, dp = _state(tiny_config)
    batch, onehot = _batch()
    eps = torch.randn(len(batch.x), tiny_config.model.latent_dim)
    shared = [nets.decoder.head.weight]
    norm = dp.privatize_vae(nets, batch, onehot, eps, tiny_config, shared)
    dp.scale_private_grads(nets, 2.0)
    private = {n: p.grad.clone() for n, p in nets.decoder.named_parameters()}
    nets.zero_grad()
    loss, _, _ = vae_terms(nets, batch.x, onehot, eps, tiny_config.loss.kl_beta)
    (2.0 * loss.sum() / dp.expected_units).backward()
    for name, p in nets.decoder.named_parameters():
        torch.testing.assert_close(private[name], p.grad, atol=1e-5, rtol=1e-4)
    assert norm == pytest.approx(float(private["head.weight"].norm()) / 2.0, rel=1e-4)
    # with a clip of 0.01 and two units of four rows, the summed gradient has norm <= 2 * 0.01
    nets, dp = _state(tiny_config, clip=0.01)
    batch.units = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    dp.privatize_vae(nets, batch, onehot, eps, tiny_config, [nets.decoder.head.weight])
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in dp._vae.values())) * dp.expected_units
    assert total <= 2 * 0.01 + 1e-6



@pytest.mark.parametrize("clip", [1e3, 0.01])
def test_dp_gradient_in_chunks_is_the_whole_batch_release(tiny_config, monkeypatch, clip):
    # chunks of 16 rows clipped and summed as they come, then noised once: the release (noise
    # included, same seed) that clipping and noising the whole batch's per-example gradients gives
    batch, onehot = _batch(40)
    fake, alpha = torch.rand_like(batch.x), torch.rand(len(batch.x))
    grads = {}
    for floats in (None, 1):
        if floats is not None:
            monkeypatch.setattr(private_step, "CHUNK_FLOATS", floats)  # 16 rows a chunk
        nets, dp = _state(tiny_config, clip=clip)
        dp.plan.parts["dpsgd/critic"] = 0.7
        dp.privatize_critic(nets, batch, fake, onehot, alpha, tiny_config)
        grads[floats] = {n: p.grad.clone() for n, p in nets.critic.named_parameters()}
    for name, g in grads[None].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-5)

# --- privacy unit ----------------------------------------------------------------------------

def test_poisson_sampler_takes_whole_units_at_rate_q():
    units = np.repeat(np.arange(400), 3)
    sampler = UnitSampler(units, 0.1, seed=0)
    sizes = []
    for _ in range(200):
        rows, local = sampler.sample()
        sizes.append(len(rows))
        assert np.all(np.bincount(units[rows.numpy()])[np.unique(units[rows.numpy()])] == 3)
        assert len(torch.unique(local)) * 3 == len(rows)
    assert np.mean(sizes) == pytest.approx(0.1 * 1200, rel=0.05)


def test_privacy_unit_caps_rows_and_accounts_per_unit(mixed_table, private_config):
    df = mixed_table.copy()
    df["person"] = np.arange(len(df)) // 10  # 60 persons of 10 rows each
    cfg = private_config.replace(**{"privacy.unit": "person", "privacy.max_rows_per_unit": 3,
                                    "privacy.epsilon": 8.0, "train.batch_size": 60, "data.columns": BOUNDED})
    assert len(CADASG(cfg).prepare(df).x) == 180  # 3 rows kept of each person's 10
    model = CADASG(cfg).fit(df)
    count = next(m for m in model.ledger.mechanisms if m.name == "preprocess/count")
    sd = count.noise_multiplier * count.sensitivity * 3  # the released rows: (units, rows / k) scaled back by k
    assert model.meta["training_rows"] != 180 and abs(model.meta["training_rows"] - 180) < 5 * sd  # released
    assert "person" in model.schema.dropped and "person" not in model.sample(20).columns
    histograms = next(m for m in model.ledger.mechanisms if m.name == "preprocess/histograms")
    assert histograms.sensitivity == pytest.approx(3 * math.sqrt(len(model.schema.columns)))
    step = next(m for m in model.ledger.mechanisms if m.name.startswith("train_step"))
    rows, units = model.meta["training_rows"], model.meta["privacy"]["expected_units_per_step"] / step.sample_rate
    assert step.sample_rate == pytest.approx(60 / rows)  # expected rows per batch / released rows; units at q
    assert model.ledger.epsilon() <= 8.0
    assert units != 60 and abs(units - 60) < 5 * count.noise_multiplier * count.sensitivity  # the released units


def test_units_over_the_cap_are_refused(mixed_table, private_config):
    from cadasg_dist.errors import InvalidDataError
    from cadasg_dist.private.fit import fit_private

    model = CADASG(private_config)
    prepared = model.prepare(mixed_table)
    x, ids, dims = prepared.x, prepared.ids, prepared.dims
    with pytest.raises(InvalidDataError, match="max_rows_per_unit"):
        fit_private(private_config, x, ids, dims, model.schema, units=np.zeros(len(x), dtype=np.int64))


def test_frame_with_missing_unit_is_refused(mixed_table, private_config):
    from cadasg_dist.errors import InvalidDataError

    df = mixed_table.assign(person=pd.Series(np.arange(len(mixed_table)), dtype="float").where(
        np.arange(len(mixed_table)) != 5))
    with pytest.raises(InvalidDataError, match="missing values"):
        CADASG(private_config.replace(**{"privacy.unit": "person"})).fit(df)


def test_private_fit_with_per_layer_clipping_keeps_the_budget(mixed_table, private_config):
    model = CADASG(private_config.replace(**{"privacy.clipping": "per_layer"})).fit(mixed_table)
    report = model.meta["privacy"]
    assert report["clipping"] == "per_layer" and model.ledger.epsilon() <= 4.0
    thresholds = report["final_thresholds"]["dpsgd/critic"]
    assert len({round(v, 6) for v in thresholds.values()}) > 1  # the tensors' thresholds moved apart


def test_weight_average_is_an_ema_of_the_iterates_loaded_at_the_end():
    from cadasg_dist.private.fit import WeightAverage

    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    average = WeightAverage(layer, decay=0.5)
    for value in (4.0, 8.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
    average.load_into()
    assert float(layer.weight) == pytest.approx(0.25 * 0 + 0.25 * 4 + 0.5 * 8)  # EMA from the initial weights
    off = WeightAverage(layer, decay=0.0)
    off.update()
    off.load_into()
    assert float(layer.weight) == pytest.approx(5.0)  # decay 0: the last iterate stays
