"""Pure privacy math over plain histories of ``(noise_multiplier, sample_rate, steps)`` triples.

Privacy caveats first: every bound here is for the *Poisson-subsampled Gaussian mechanism* with
add/remove-one-row adjacency. It is only valid if the caller (1) samples each row independently
with probability ``sample_rate`` (not shuffled fixed-size batches), (2) bounds each row's
contribution to L2 norm ``sensitivity`` (clipping) and (3) adds Gaussian noise of standard deviation
``noise_multiplier * sensitivity``. Floating-point Gaussian sampling and ``torch.Generator`` are not
cryptographically secure; the bounds are those of the idealised mechanism.

This module holds no state (like Opacus's ``accountants/analysis``): the stateful
``PrivacyLedger`` calls it, and :func:`recompute_epsilon` re-derives ε from a saved ledger's JSON
with nothing but Opacus's functions, so an auditor can check the spent budget without this
package's classes.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cadasg_dist.errors import ArtifactError, CADASGError, ConfigError, PrivacyBudgetError
from cadasg_dist.privacy import _checks

LEDGER_FORMAT = "cadasg.privacy_ledger"
LEDGER_VERSION = 1
ACCOUNTANTS = ("rdp", "prv")
MECHANISM_KINDS = ("subsampled_gaussian",)
# The same orders as Opacus's ``RDPAccountant.DEFAULT_ALPHAS`` (tests/unit/test_privacy_ledger.py checks
# they are equal), so our ε equals the one Opacus reports; written out so that importing this module
# (every saved model's ledger does) does not import Opacus, which takes seconds.
DEFAULT_RDP_ORDERS: tuple[float, ...] = (*(1 + x / 10.0 for x in range(1, 100)), *(float(a) for a in range(12, 64)))
# Opacus's PRVAccountant default; the PRV ε we report is its *upper* bound (estimate + error).
PRV_EPS_ERROR = 0.01

History = Sequence[tuple[float, float, int]]  # (noise_multiplier, sample_rate, steps)


def _rdp() -> Any:
    """Opacus's RDP analysis, imported on first use: loading and sampling a model need no accounting."""
    from opacus.accountants.analysis import rdp

    return rdp


@functools.lru_cache(maxsize=4096)
def _rdp_one_step(noise_multiplier: float, sample_rate: float, orders: tuple[float, ...]) -> np.ndarray:
    # compute_rdp(steps=k) is compute_rdp(steps=1) * k, bit for bit, so caching one step is exact.
    curve = np.asarray(
        _rdp().compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(orders)),
        dtype=np.float64,
    )
    curve.setflags(write=False)
    return curve


def rdp_curve(
    *, noise_multiplier: float, sample_rate: float, steps: int, orders: Sequence[float] = DEFAULT_RDP_ORDERS
) -> np.ndarray:
    """RDP ε(α) at each order of ``steps`` compositions of a subsampled Gaussian (Opacus's math).

    ``noise_multiplier == 0`` gives ``inf`` at every order (no privacy).
    """
    return _rdp_one_step(float(noise_multiplier), float(sample_rate), tuple(float(a) for a in orders)) * int(steps)


def compose_rdp(history: History, *, orders: Sequence[float] = DEFAULT_RDP_ORDERS) -> np.ndarray:
    """Sum of the RDP curves of every ``(noise_multiplier, sample_rate, steps)`` entry, in order."""
    curves = [rdp_curve(noise_multiplier=s, sample_rate=q, steps=k, orders=orders) for s, q, k in history]
    if not curves:
        return np.zeros(len(orders))
    return sum(curves[1:], curves[0])


def rdp_to_epsilon(*, rdp: np.ndarray, orders: Sequence[float], delta: float) -> tuple[float, float]:
    """(ε, best order) of an RDP curve at ``delta`` (Balle et al. 2020 conversion, via Opacus).

    Opacus warns when the best order is the first or last one (the bound could be tighter with a
    wider range); that is a looseness, never an under-estimate, so the warning is silenced here and
    the best order is returned for the caller to report.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        eps, order = _rdp().get_privacy_spent(orders=list(orders), rdp=np.asarray(rdp), delta=delta)
    return max(float(eps), 0.0), float(order)


def prv_epsilon(history: History, *, delta: float, eps_error: float = PRV_EPS_ERROR) -> float:
    """Upper bound on ε of the composed history by numerical PRV composition (Gopi et al. 2021).

    Mirrors ``opacus.accountants.PRVAccountant.get_epsilon`` using only
    ``opacus.accountants.analysis.prv``. Raises ``PrivacyBudgetError`` when the numerical method
    cannot bound ε (e.g. very small noise); use the RDP accountant there.
    """
    from opacus.accountants.analysis.prv import (
        Domain,
        PoissonSubsampledGaussianPRV,
        TruncatedPrivacyRandomVariable,
        compose_heterogeneous,
        compute_safe_domain_size,
        discretize,
    )

    if not history:
        return 0.0
    if any(s == 0 for s, _, _ in history):
        return math.inf
    delta_error = delta / 1000
    prvs = [PoissonSubsampledGaussianPRV(q, s) for s, q, _ in history]
    counts = [int(k) for _, _, k in history]
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            size = compute_safe_domain_size(
                prvs=prvs, max_self_compositions=counts, eps_error=eps_error, delta_error=delta_error
            )
            mesh = eps_error / np.sqrt(sum(counts) * np.log(12 / delta_error) / 2)
            domain = Domain.create_aligned(-size, size, mesh)
            dprvs = [discretize(TruncatedPrivacyRandomVariable(p, domain.t_min, domain.t_max), domain) for p in prvs]
            composed = compose_heterogeneous(dprvs=dprvs, num_self_compositions=counts)
            _, _, eps_upper = composed.compute_epsilon(delta, delta_error, eps_error)
    except (ValueError, RuntimeError, OverflowError, MemoryError) as err:
        raise PrivacyBudgetError(
            f"the PRV accountant could not bound epsilon for history {list(history)} at delta={delta}: "
            f"{err}; use accountant='rdp' for this range."
        ) from err
    eps_upper = float(eps_upper)
    return eps_upper if math.isfinite(eps_upper) else math.inf


def epsilon_from_history(
    history: History, *, delta: float, accountant: str = "rdp", orders: Sequence[float] = DEFAULT_RDP_ORDERS
) -> float:
    """ε at ``delta`` of all entries of ``history`` composed (0.0 for an empty history)."""
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r}; use one of {ACCOUNTANTS}.")
    if not history:
        return 0.0
    if accountant == "prv":
        return prv_epsilon(history, delta=delta)
    eps, _ = rdp_to_epsilon(rdp=compose_rdp(history, orders=orders), orders=orders, delta=delta)
    return eps


def check_ledger_state(state: Mapping[str, Any]) -> None:
    """Raise ``ArtifactError`` unless ``state`` is a well-formed ledger state of this version."""
    if not isinstance(state, Mapping):
        raise ArtifactError(f"a privacy ledger state must be a dict, got {type(state).__name__}.")
    fmt, version = state.get("format"), state.get("version")
    if fmt != LEDGER_FORMAT or version != LEDGER_VERSION:
        raise ArtifactError(
            f"not a privacy ledger of format {LEDGER_FORMAT!r} version {LEDGER_VERSION} "
            f"(got format={fmt!r}, version={version!r}); it was written by something else or by an "
            f"incompatible version of cadasg_dist, so its epsilon cannot be trusted."
        )
    private = state.get("private")
    if not isinstance(private, bool):
        raise ArtifactError(f"privacy ledger state has no boolean 'private' field (got {private!r}).")
    mechanisms = state.get("mechanisms")
    if not isinstance(mechanisms, list):
        raise ArtifactError("privacy ledger state has no 'mechanisms' list.")
    if not private:
        return
    accountant = state.get("accountant")
    if accountant not in ACCOUNTANTS:
        raise ArtifactError(
            f"privacy ledger state names unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}."
        )
    orders = state.get("rdp_orders")
    if not isinstance(orders, list) or not orders or not all(isinstance(a, int | float) and a > 1 for a in orders):
        raise ArtifactError(f"privacy ledger state has bad 'rdp_orders' {orders!r}; expected a list of numbers > 1.")
    try:
        _checks.check_delta(state.get("delta"))
        for i, mech in enumerate(mechanisms):
            if not isinstance(mech, Mapping) or mech.get("kind") not in MECHANISM_KINDS:
                raise ConfigError(f"mechanism #{i} is not a dict of kind {MECHANISM_KINDS}: {mech!r}")
            _checks.check_noise_multiplier(mech.get("noise_multiplier"), name=f"mechanism #{i} noise_multiplier")
            _checks.check_sample_rate(mech.get("sample_rate"), name=f"mechanism #{i} sample_rate")
            _checks.check_steps(mech.get("steps"), name=f"mechanism #{i} steps")
    except CADASGError as err:
        raise ArtifactError(f"privacy ledger state is invalid: {err}") from err


def recompute_epsilon(ledger_json: Mapping[str, Any] | str) -> float:
    """Re-derive the spent ε from a ledger's JSON (``PrivacyLedger.state_dict()`` or its text).

    Uses only the JSON and Opacus's pure functions (``compute_rdp`` + ``get_privacy_spent``, or the
    PRV analysis), not ``PrivacyLedger``, so it is an independent check of what a run reports.
    Returns ``inf`` for a non-private ledger. Raises ``ArtifactError`` on a malformed document.
    """
    state = json.loads(ledger_json) if isinstance(ledger_json, str) else ledger_json
    check_ledger_state(state)
    if not state["private"]:
        return math.inf
    delta = float(state["delta"])
    history = [(float(m["noise_multiplier"]), float(m["sample_rate"]), int(m["steps"])) for m in state["mechanisms"]]
    if not history:
        return 0.0
    if state["accountant"] == "prv":
        return prv_epsilon(history, delta=delta)
    orders = [float(a) for a in state["rdp_orders"]]
    total = sum(
        np.asarray(_rdp().compute_rdp(q=q, noise_multiplier=s, steps=k, orders=orders)) for s, q, k in history
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        eps, _ = _rdp().get_privacy_spent(orders=orders, rdp=total, delta=delta)
    return max(float(eps), 0.0)
