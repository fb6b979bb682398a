from cadasg_dist.config import LossConfig
from cadasg_dist.train.balancing import LossBalancer


def test_weights_move_toward_the_gradient_norm_ratio_and_stay_bounded():
    bal = LossBalancer(LossConfig(balance_smoothing=0.0, balance_min=0.1, balance_max=10.0))
    w = bal.update({"wgan": 2.0, "kl": 4.0, "cov": 1.0, "utility": 1000.0})
    assert w["wgan"] == 1.0
    assert w["kl"] == 0.5  # 1 * 2 / 4
    assert w["cov"] == 2.0
    assert w["utility"] == 0.1  # clamped at balance_min * initial


def test_smoothing_and_fixed_weights():
    bal = LossBalancer(LossConfig(balance_smoothing=0.9))
    w = bal.update({"wgan": 1.0, "kl": 0.5})
    assert abs(w["kl"] - (0.9 * 1.0 + 0.1 * 2.0)) < 1e-12
    fixed = LossBalancer(LossConfig(adaptive=False, cov=3.0))
    assert fixed.update({"wgan": 1.0, "cov": 100.0})["cov"] == 3.0


def test_non_finite_or_zero_norms_are_ignored_and_state_round_trips():
    bal = LossBalancer(LossConfig())
    before = bal.weights()
    assert bal.update({"wgan": 0.0, "kl": 1.0}) == before
    assert bal.update({"wgan": 1.0, "kl": float("nan")}) == before
    bal.update({"wgan": 1.0, "kl": 0.25})
    other = LossBalancer(LossConfig())
    other.load_state_dict(bal.state_dict())
    assert other.weights() == bal.weights()
