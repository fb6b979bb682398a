"""Noise calibration: the smallest noise multipliers that keep a run within its (ε, δ) budget.

Privacy caveats first: the returned σ is only safe if the run then does exactly what was
calibrated for (the same sample rates, at most the same number of steps, Poisson sampling, and
nothing else touching the private rows beyond ``extra_mechanisms``). Record every mechanism in the
``PrivacyLedger`` and stop with ``epsilon_if`` as a second line of defence. Calibration itself
reads no data, so it costs no budget.

Both searches are binary searches on a multiplicative grid that always return the *upper* end of
the final bracket, whose ε was evaluated to be ≤ the target: the result never overshoots, and is
within ``tolerance`` (relative) of the smallest feasible value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cadasg_dist.errors import ConfigError, PrivacyBudgetError
from cadasg_dist.privacy import _checks
from cadasg_dist.privacy.analysis import (
    ACCOUNTANTS,
    DEFAULT_RDP_ORDERS,
    compose_rdp,
    epsilon_from_history,
    rdp_curve,
    rdp_to_epsilon,
)
from cadasg_dist.privacy.ledger import Mechanism

# Below this σ the guarantee is meaningless in practice and Opacus's RDP series gets slow.
SIGMA_FLOOR = 0.1
SIGMA_CEILING = 1e6  # Opacus's MAX_SIGMA
# Searches aim a hair under the target so that re-composing the same history in another order
# (e.g. merged ledger entries) cannot land above it by float rounding.
_TARGET_MARGIN = 1e-9

History = list[tuple[float, float, int]]


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    extra_mechanisms: Sequence[Mechanism] = (),
    tolerance: float = 0.01,
) -> float:
    """Smallest σ such that ``extra_mechanisms`` + ``steps`` × subsampled Gaussian(σ, q) has ε ≤ target.

    Privacy: assumes Poisson sampling at rate ``sample_rate`` and at most ``steps`` steps; the
    ``extra_mechanisms`` (e.g. cache releases, private preprocessing) must be everything else the
    run will spend. The result is rounded *up* (never overshoots) and is at most ``tolerance``
    (relative) above the smallest feasible σ, or equal to ``SIGMA_FLOOR``.

    Raises ``PrivacyBudgetError`` naming the numbers when no σ ≤ ``SIGMA_CEILING`` meets the
    target (e.g. the extra mechanisms alone already spend it).
    """
    target = _checks.check_epsilon(target_epsilon)
    delta = _checks.check_delta(delta)
    q = _checks.check_sample_rate(sample_rate)
    steps = _checks.check_steps(steps)
    tolerance = _check_tolerance(tolerance)
    extra = _extra_history(extra_mechanisms)
    eps_of = _epsilon_function(extra, [(q, steps)], delta=delta, accountant=accountant)
    what = f"{steps} steps at sample_rate={q}"
    _check_reachable(eps_of, extra, target=target, delta=delta, accountant=accountant, what=what)
    start = None
    if accountant == "prv":
        start = _rdp_start(lambda: calibrate_noise(target_epsilon=target, delta=delta, sample_rate=q, steps=steps,
                                                   extra_mechanisms=extra_mechanisms, tolerance=0.05))
    return _smallest_scale(lambda s: eps_of([s]), target=target, floor=SIGMA_FLOOR, ceiling=SIGMA_CEILING,
                           tolerance=tolerance, what=what, delta=delta, start=start)


def calibrate_joint(
    *,
    target_epsilon: float,
    delta: float,
    components: Sequence[Mapping[str, Any]],
    accountant: str = "rdp",
    extra_mechanisms: Sequence[Mechanism] = (),
    tolerance: float = 0.01,
) -> dict[str, float]:
    """Noise multipliers for several mechanisms sharing one budget: σ_i = s / sqrt(weight_i).

    ``components`` are dicts ``{"name", "sample_rate", "steps", "weight"}`` (weight defaults to 1;
    only ratios matter). One scale ``s`` is binary-searched so that all components composed (plus
    ``extra_mechanisms``) give ε ≤ target; a larger weight means *less* noise, i.e. a larger share
    of the budget. For full-batch Gaussian mechanisms (q = 1) component i then spends exactly the
    fraction ``steps_i * weight_i / Σ_j steps_j * weight_j`` of the total RDP (zCDP ρ), since its
    RDP is ``steps_i * α * weight_i / (2 s²)``. See docs/concepts/accounting.md.

    Privacy: same caveats as :func:`calibrate_noise`; never overshoots; raises
    ``PrivacyBudgetError`` when the target cannot be met.
    """
    target = _checks.check_epsilon(target_epsilon)
    delta = _checks.check_delta(delta)
    tolerance = _check_tolerance(tolerance)
    names, weights, shapes = _parse_components(components)
    extra = _extra_history(extra_mechanisms)
    eps_of = _epsilon_function(extra, shapes, delta=delta, accountant=accountant)
    inv_sqrt_w = [1.0 / math.sqrt(w) for w in weights]

    def sigmas(scale: float) -> list[float]:
        return [scale * f for f in inv_sqrt_w]

    what = ", ".join(
        f"{n} ({k} steps at q={q}, weight {w})" for n, (q, k), w in zip(names, shapes, weights, strict=True)
    )
    _check_reachable(eps_of, extra, target=target, delta=delta, accountant=accountant, what=what)
    w_max, w_min = max(weights), min(weights)
    start = None
    if accountant == "prv":
        first = names[0]
        start = _rdp_start(lambda: calibrate_joint(target_epsilon=target, delta=delta, components=components,
                                                   extra_mechanisms=extra_mechanisms, tolerance=0.05)[first]
                           / inv_sqrt_w[0])
    scale = _smallest_scale(lambda s: eps_of(sigmas(s)), target=target, floor=SIGMA_FLOOR * math.sqrt(w_max),
                            ceiling=SIGMA_CEILING * math.sqrt(w_min), tolerance=tolerance, what=what, delta=delta,
                            start=start)
    return dict(zip(names, sigmas(scale), strict=True))


# -- helpers -------------------------------------------------------------------------------------


def _epsilon_function(
    extra: History, shapes: list[tuple[float, int]], *, delta: float, accountant: str
) -> Callable[[list[float]], float]:
    """ε(σ_1..σ_k) of ``extra`` followed by components ``(q_i, steps_i)`` with noise σ_i."""
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r}; use one of {ACCOUNTANTS}.")
    if accountant == "rdp":
        orders = DEFAULT_RDP_ORDERS
        base = compose_rdp(extra, orders=orders)  # same summation order as the ledger's

        def eps_rdp(sigmas: list[float]) -> float:
            total: np.ndarray = base
            for sigma, (q, k) in zip(sigmas, shapes, strict=True):
                total = total + rdp_curve(noise_multiplier=sigma, sample_rate=q, steps=k, orders=orders)
            return rdp_to_epsilon(rdp=total, orders=orders, delta=delta)[0]

        return eps_rdp

    def eps_prv(sigmas: list[float]) -> float:
        history = extra + [(s, q, k) for s, (q, k) in zip(sigmas, shapes, strict=True)]
        try:
            return epsilon_from_history(history, delta=delta, accountant="prv")
        except PrivacyBudgetError:
            return math.inf  # the numerical method failed: treat as infeasible, search more noise

    return eps_prv


def _check_reachable(
    eps_of: Callable[[list[float]], float], extra: History, *, target: float, delta: float, accountant: str,
    what: str,
) -> None:
    """Raise if even infinite noise on the new components leaves ε ≥ target."""
    if accountant == "rdp":
        floor_eps = rdp_to_epsilon(rdp=compose_rdp(extra), orders=DEFAULT_RDP_ORDERS, delta=delta)[0]
        source = "the extra mechanisms plus the RDP-to-(ε, δ) conversion" if extra else \
            "the RDP-to-(ε, δ) conversion with Opacus's orders (≤ 63)"
    else:
        floor_eps = epsilon_from_history(extra, delta=delta, accountant=accountant) if extra else 0.0
        source = "the extra mechanisms"
    if floor_eps >= target * (1 - _TARGET_MARGIN):
        raise PrivacyBudgetError(
            f"target_epsilon={target} at delta={delta} cannot be met for {what}: {source} alone already "
            f"cost epsilon={floor_eps:.4g}; raise target_epsilon, raise delta, or spend less elsewhere."
        )


def _smallest_scale(
    eps_at: Callable[[float], float], *, target: float, floor: float, ceiling: float, tolerance: float,
    what: str, delta: float, start: float | None = None,
) -> float:
    """Smallest scale in [floor, ceiling] with eps_at(scale) <= target, up to ``tolerance``, rounded up.

    Without ``start`` the floor is tried first, then 1, 2, 4, ...; with ``start`` (a good guess, e.g.
    the RDP answer when calibrating for PRV, whose evaluations are slow at small noise) the bracket
    grows or shrinks from there by factors of 2.
    """
    goal = target * (1 - _TARGET_MARGIN)
    if start is None:
        if eps_at(floor) <= goal:
            return floor
        lo, hi = floor, max(2 * floor, 1.0)
    else:
        lo, hi = start / 2, min(max(start, floor), ceiling)
    eps_hi = eps_at(hi)
    while eps_hi > goal:
        if hi >= ceiling:
            raise PrivacyBudgetError(
                f"target_epsilon={target} at delta={delta} cannot be met for {what}: even noise scale "
                f"{hi:.3g} gives epsilon={eps_hi:.4g}; raise target_epsilon, or use fewer steps or a "
                f"smaller sample_rate."
            )
        lo, hi = hi, min(2 * hi, ceiling)
        eps_hi = eps_at(hi)
    if start is not None:
        while lo > floor and eps_at(lo) <= goal:
            lo, hi = lo / 2, lo
        if lo <= floor:
            if eps_at(floor) <= goal:
                return floor
            lo = floor
    # Invariant: eps_at(lo) > goal >= eps_at(hi); return hi, the side known to be within budget.
    while hi > lo * (1 + tolerance):
        mid = math.sqrt(lo * hi)
        if eps_at(mid) <= goal:
            hi = mid
        else:
            lo = mid
    return hi


def _rdp_start(rdp_answer: Callable[[], float]) -> float:
    """The RDP calibration as a starting guess for PRV (usually within a factor 2), else 1."""
    try:
        return rdp_answer()
    except PrivacyBudgetError:
        return 1.0  # RDP cannot reach the target (conversion floor) but PRV might


def _extra_history(extra_mechanisms: Sequence[Mechanism]) -> History:
    history: History = []
    for i, mech in enumerate(extra_mechanisms):
        if isinstance(mech, Mapping):
            mech = Mechanism.from_dict(mech)
        if not isinstance(mech, Mechanism):
            raise ConfigError(f"extra_mechanisms[{i}] must be a Mechanism, got {type(mech).__name__}.")
        if mech.noise_multiplier == 0:
            raise PrivacyBudgetError(
                f"extra mechanism {mech.name!r} has noise_multiplier 0, so epsilon is infinite whatever "
                f"noise the rest gets; give it noise or drop it from a private run."
            )
        history.append(mech.history_entry())
    return history


def _parse_components(
    components: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[float], list[tuple[float, int]]]:
    if not components:
        raise ConfigError("calibrate_joint needs at least one component {'name', 'sample_rate', 'steps', 'weight'}.")
    names: list[str] = []
    weights: list[float] = []
    shapes: list[tuple[float, int]] = []
    allowed = {"name", "sample_rate", "steps", "weight"}
    for i, comp in enumerate(components):
        if not isinstance(comp, Mapping):
            raise ConfigError(f"components[{i}] must be a dict, got {type(comp).__name__}.")
        unknown = set(comp) - allowed
        if unknown or not {"name", "sample_rate", "steps"} <= set(comp):
            raise ConfigError(f"components[{i}] = {dict(comp)!r} must have keys {sorted(allowed)} (weight optional).")
        name = comp["name"]
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(f"components[{i}] name {name!r} must be a non-empty string, unique among components.")
        names.append(name)
        weights.append(_checks.check_positive(comp.get("weight", 1.0), name=f"{name} weight"))
        shapes.append((_checks.check_sample_rate(comp["sample_rate"], name=f"{name} sample_rate"),
                       _checks.check_steps(comp["steps"], name=f"{name} steps")))
    return names, weights, shapes


def _check_tolerance(tolerance: float) -> float:
    tolerance = _checks.check_positive(tolerance, name="tolerance")
    if tolerance >= 1:
        raise ConfigError(f"tolerance is relative and must be in (0, 1), got {tolerance!r}; 0.01 is the default.")
    return tolerance
