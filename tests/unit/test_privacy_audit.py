"""The audit's statistics: the one-run ε lower bound (Steinke, Nasr and Jagielski 2023) and the
shadow-model attack, on mechanisms whose privacy is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cadasg_dist.errors import ConfigError
from cadasg_dist.privacy.audit import (
    audit_p_value,
    epsilon_lower_bound,
    make_canaries,
    one_run_audit,
    shadow_attack,
)


def test_p_value_at_epsilon_zero_is_a_fair_coin_tail() -> None:
    assert audit_p_value(1000, 100, 60, 0.0) == pytest.approx(stats.binom.sf(59, 100, 0.5))


def test_p_value_falls_as_epsilon_grows_and_the_delta_term_only_adds() -> None:
    ps = [audit_p_value(1000, 100, 80, e) for e in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(ps, ps[1:]))
    assert audit_p_value(1000, 100, 80, 1.0, delta=1e-5) > audit_p_value(1000, 100, 80, 1.0)


def test_perfect_guesses_give_the_closed_form_bound() -> None:
    # 100 of 100 right: q^100 < 0.05  <=>  eps > log(q / (1 - q)) with q = 0.05 ** (1 / 100)
    q = 0.05 ** (1 / 100)
    assert epsilon_lower_bound(1000, 100, 100, beta=0.05) == pytest.approx(math.log(q / (1 - q)), abs=1e-3)


def test_chance_level_guesses_prove_nothing() -> None:
    assert epsilon_lower_bound(1000, 100, 50) == 0.0


def _randomized_response(eps: float, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An eps-DP mechanism per canary: the released bit equals the coin with probability e^eps/(1+e^eps)."""
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    truthful = rng.random(m) < 1 / (1 + math.exp(-eps))
    bit = np.where(truthful, included, ~included)
    return bit + 0.01 * rng.random(m), included  # ties broken at random


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0])
def test_audit_rarely_beats_the_true_epsilon_of_randomized_response(eps: float) -> None:
    # The bound holds with probability 1 - beta: over 60 fixed seeds at beta = 0.05 about 3 may
    # exceed; more than 9 (P < 1% for a correct bound) means the statistics are wrong.
    over = [one_run_audit(*_randomized_response(eps, 2000, seed), delta=0.0, beta=0.05).epsilon_lower > eps
            for seed in range(60)]
    assert sum(over) <= 9, sum(over)


def test_audit_has_power_against_a_leaky_mechanism() -> None:
    scores, included = _randomized_response(4.0, 2000, 0)
    result = one_run_audit(scores, included, delta=1e-5)
    assert 2.0 < result.epsilon_lower <= 4.0
    assert result.tried == 5 and result.correct <= result.guesses


def test_audit_rejects_mismatched_inputs() -> None:
    with pytest.raises(ConfigError, match="one score per canary"):
        one_run_audit(np.zeros(3), np.zeros(4, dtype=bool), delta=0.0)
    with pytest.raises(ConfigError, match="above the 10 canaries"):
        one_run_audit(np.zeros(10), np.zeros(10, dtype=bool), delta=0.0, guesses=[(6, 6)])


def test_canaries_are_the_least_typical_rows() -> None:
    rng = np.random.default_rng(0)
    pool = np.vstack([rng.normal(size=(400, 3)), rng.uniform(-60, 60, size=(20, 3))])  # 20 isolated rows
    picked = make_canaries(pool, 5, rng)
    assert len(set(picked.tolist())) == 5 and (picked >= 400).all()


def _population(seed: int, n: int = 3000) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4))


def test_shadow_attack_catches_a_copying_generator() -> None:
    rng = np.random.default_rng(1)

    def blur(rows: np.ndarray, seed: int) -> np.ndarray:
        return rows + 0.01 * np.random.default_rng(seed).normal(size=rows.shape)

    population, train, holdout = _population(2), _population(3, 600), _population(4, 600)

    def copier(indices: np.ndarray, seed: int) -> np.ndarray:  # releases its training rows, slightly blurred
        return blur(population[indices], seed)

    result = shadow_attack(copier, population=population, target_synthetic=blur(train, 9), members=train,
                           non_members=holdout, shadows=3, shadow_rows=600, rng=rng)
    assert result.auc > 0.9 and result.shadow_auc > 0.9


def test_shadow_attack_is_a_coin_against_a_generator_that_ignores_its_data() -> None:
    rng = np.random.default_rng(1)

    def oblivious(indices: np.ndarray, seed: int) -> np.ndarray:  # draws from the population law, whatever it saw
        return np.random.default_rng(seed).normal(size=(len(indices), 4))

    population, train, holdout = _population(2), _population(3, 600), _population(4, 600)
    result = shadow_attack(oblivious, population=population, target_synthetic=oblivious(train, 9), members=train,
                           non_members=holdout, shadows=3, shadow_rows=600, rng=rng)
    assert abs(result.auc - 0.5) < 0.07
