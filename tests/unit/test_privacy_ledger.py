"""PrivacyLedger: golden ε against Opacus, composition, persistence, recomputation, input checks."""

from __future__ import annotations

import json
import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from cadasg_dist.errors import ArtifactError, ConfigError
from cadasg_dist.privacy import DEFAULT_RDP_ORDERS, Mechanism, PrivacyLedger, recompute_epsilon

DELTA = 1e-5

# (sigma, q, steps) -> epsilon at delta=1e-5, from opacus 1.6.0 RDPAccountant.get_epsilon.
GOLDEN = [
    ((1.0, 0.01, 1000), 2.1013652716430564),
    ((0.8, 0.004, 5000), 2.92523658148822),
    ((4.0, 0.1, 200), 1.5568078922121804),
    ((2.0, 1.0, 10), 8.079406222420491),
]


def _opacus_epsilon(history: list[tuple[float, float, int]], delta: float = DELTA) -> float:
    accountant = RDPAccountant()
    accountant.history = list(history)
    return accountant.get_epsilon(delta=delta)


def test_orders_match_opacus() -> None:
    assert list(DEFAULT_RDP_ORDERS) == [float(a) for a in RDPAccountant.DEFAULT_ALPHAS]


@pytest.mark.parametrize(("mech", "expected"), GOLDEN)
def test_golden_epsilon_matches_opacus(mech: tuple[float, float, int], expected: float) -> None:
    sigma, q, steps = mech
    ledger = PrivacyLedger(delta=DELTA)
    ledger.record(name="dpsgd/critic", noise_multiplier=sigma, sample_rate=q, steps=steps)

    eps = ledger.epsilon()

    assert eps == pytest.approx(expected, rel=1e-12)
    assert eps == pytest.approx(_opacus_epsilon([mech]), rel=1e-12)


def test_composition_equals_opacus_fed_the_same_steps() -> None:
    ledger = PrivacyLedger(delta=DELTA)
    accountant = RDPAccountant()
    for _ in range(300):
        ledger.record(name="dpsgd/critic", noise_multiplier=1.1, sample_rate=0.02)
        accountant.step(noise_multiplier=1.1, sample_rate=0.02)
    for _ in range(5):
        ledger.record(name="cache/latent", noise_multiplier=6.0, sample_rate=1.0)
        accountant.step(noise_multiplier=6.0, sample_rate=1.0)

    assert ledger.epsilon() == pytest.approx(accountant.get_epsilon(delta=DELTA), rel=1e-12)
    assert ledger.epsilon(delta=1e-6) == pytest.approx(accountant.get_epsilon(delta=1e-6), rel=1e-12)
    assert [(m.name, m.steps) for m in ledger.mechanisms] == [("dpsgd/critic", 300), ("cache/latent", 5)]


def test_record_merges_only_consecutive_identical_entries() -> None:
    ledger = PrivacyLedger(delta=DELTA)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01, steps=2)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01, steps=3)
    ledger.record(name="dpsgd/vae", noise_multiplier=1.0, sample_rate=0.01)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.02)

    assert [(m.name, m.sample_rate, m.steps) for m in ledger.mechanisms] == [
        ("dpsgd/critic", 0.01, 5), ("dpsgd/vae", 0.01, 1), ("dpsgd/critic", 0.01, 1), ("dpsgd/critic", 0.02, 1)]


def test_empty_ledger_spends_nothing() -> None:
    assert PrivacyLedger(delta=DELTA).epsilon() == 0.0


def test_epsilon_if_predicts_without_recording() -> None:
    ledger = PrivacyLedger(delta=DELTA)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01, steps=500)

    predicted = ledger.epsilon_if(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01, steps=500)

    assert len(ledger.mechanisms) == 1 and ledger.mechanisms[0].steps == 500
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01, steps=500)
    assert predicted == pytest.approx(ledger.epsilon(), rel=1e-12)
    assert predicted == pytest.approx(GOLDEN[0][1], rel=1e-12)


def test_recompute_epsilon_from_json_alone() -> None:
    ledger = PrivacyLedger(delta=DELTA)
    ledger.record(name="preprocess/quantiles", noise_multiplier=8.0, sample_rate=1.0, sensitivity=2.0)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01, steps=1000)
    ledger.record(name="cache/latent", noise_multiplier=5.0, sample_rate=1.0, steps=3)

    assert recompute_epsilon(ledger.state_dict()) == pytest.approx(ledger.epsilon(), rel=1e-12)
    assert recompute_epsilon(ledger.to_json()) == pytest.approx(ledger.epsilon(), rel=1e-12)
    assert recompute_epsilon(json.loads(ledger.to_json())) == pytest.approx(
        _opacus_epsilon([(8.0, 1.0, 1), (1.0, 0.01, 1000), (5.0, 1.0, 3)]), rel=1e-12)


def test_state_dict_round_trip() -> None:
    ledger = PrivacyLedger(delta=DELTA)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.3, sample_rate=0.05, steps=40, sensitivity=0.5)
    ledger.record(name="cache/latent", noise_multiplier=3.0, sample_rate=1.0)

    restored = PrivacyLedger.from_json(ledger.to_json())
    resumed = PrivacyLedger(delta=DELTA)
    resumed.load_state_dict(json.loads(json.dumps(ledger.state_dict())))

    for other in (restored, resumed):
        assert other.mechanisms == ledger.mechanisms
        assert other.epsilon() == ledger.epsilon()
        assert other.state_dict() == ledger.state_dict()


@pytest.mark.parametrize(
    ("key", "value"),
    [("format", "opacus.rdp"), ("version", 99), ("accountant", "prv"), ("delta", 1e-6), ("private", False)],
)
def test_load_of_mismatched_state_raises(key: str, value: object) -> None:
    ledger = PrivacyLedger(delta=DELTA)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01)
    state = ledger.state_dict()
    state[key] = value

    with pytest.raises(ArtifactError, match=key if key in ("accountant", "delta", "private") else "format"):
        PrivacyLedger(delta=DELTA).load_state_dict(state)


def test_load_of_tampered_mechanism_raises() -> None:
    ledger = PrivacyLedger(delta=DELTA)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01)
    state = ledger.state_dict()
    state["mechanisms"][0]["sample_rate"] = 1.5

    with pytest.raises(ArtifactError, match="sample_rate"):
        PrivacyLedger(delta=DELTA).load_state_dict(state)
    with pytest.raises(ArtifactError):
        recompute_epsilon(state)


def test_non_private_ledger() -> None:
    ledger = PrivacyLedger.non_private()
    ledger.record(name="train/critic", noise_multiplier=0.0, sample_rate=0.01, steps=10)

    summary = ledger.summary()

    assert math.isinf(ledger.epsilon())
    assert math.isinf(ledger.epsilon_if(name="x", noise_multiplier=1.0, sample_rate=0.1, steps=1))
    assert summary["private"] is False and math.isinf(summary["epsilon"])
    assert math.isinf(recompute_epsilon(ledger.to_json()))
    assert PrivacyLedger.from_json(ledger.to_json()).mechanisms == ledger.mechanisms
    with pytest.raises(ArtifactError, match="private"):
        PrivacyLedger(delta=DELTA).load_state_dict(ledger.state_dict())


def test_summary_lists_each_mechanism_alone() -> None:
    ledger = PrivacyLedger(delta=DELTA)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01, steps=1000)
    ledger.record(name="cache/latent", noise_multiplier=2.0, sample_rate=1.0, steps=10)
    ledger.record(name="dpsgd/critic", noise_multiplier=1.0, sample_rate=0.01, steps=1000)

    summary = ledger.summary()

    assert summary["private"] is True and summary["delta"] == DELTA
    assert summary["epsilon"] == pytest.approx(ledger.epsilon())
    alone = [m["epsilon_alone"] for m in summary["mechanisms"]]
    assert alone == pytest.approx([GOLDEN[0][1], GOLDEN[3][1], GOLDEN[0][1]], rel=1e-12)
    assert summary["epsilon_by_name"]["dpsgd/critic"] == pytest.approx(
        _opacus_epsilon([(1.0, 0.01, 1000), (1.0, 0.01, 1000)]), rel=1e-12)
    assert max(alone) < summary["epsilon"] < sum(alone)
    json.dumps(summary)  # printable as JSON


def test_mechanism_dict_round_trip_and_unknown_fields() -> None:
    mech = Mechanism(name="cache/latent", noise_multiplier=2.0, sample_rate=1.0, steps=3, sensitivity=8.0)

    assert Mechanism.from_dict(mech.to_dict()) == mech
    with pytest.raises(ConfigError, match="unknown mechanism fields"):
        Mechanism.from_dict({**mech.to_dict(), "epsilon": 1.0})
    with pytest.raises(ConfigError, match="kind"):
        Mechanism(name="x", kind="laplace", noise_multiplier=1.0, sample_rate=1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"sensitivity": 0.0}, "sensitivity"),
    ],
)
def test_record_rejects_bad_values(kwargs: dict, match: str) -> None:
    args = {"name": "dpsgd/critic", "noise_multiplier": 1.0, "sample_rate": 0.01, **kwargs}
    with pytest.raises(ConfigError, match=match):
        PrivacyLedger(delta=DELTA).record(**args)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, float("nan")])
def test_bad_delta_raises(delta: float) -> None:
    with pytest.raises(ConfigError, match="delta"):
        PrivacyLedger(delta=delta)
    with pytest.raises(ConfigError, match="delta"):
        PrivacyLedger(delta=DELTA).epsilon(delta=delta)


def test_unknown_accountant_raises() -> None:
    with pytest.raises(ConfigError, match="accountant"):
        PrivacyLedger(delta=DELTA, accountant="gdp")


def test_prv_accountant_matches_opacus_and_recompute() -> None:
    history = [(1.0, 0.01, 1000), (4.0, 0.5, 10)]
    ledger = PrivacyLedger(delta=DELTA, accountant="prv")
    for sigma, q, steps in history:
        ledger.record(name="m", noise_multiplier=sigma, sample_rate=q, steps=steps)
    accountant = PRVAccountant()
    accountant.history = history

    eps = ledger.epsilon()

    assert eps == pytest.approx(accountant.get_epsilon(delta=DELTA), rel=1e-9)
    assert eps < _opacus_epsilon(history)  # PRV is tighter than RDP here
    assert recompute_epsilon(ledger.to_json()) == pytest.approx(eps, rel=1e-9)
