"""Input checks shared by the privacy modules.

Every check raises ``ConfigError`` (a ``ValueError``) naming the argument, the bad value and the
fix; none of them uses ``assert``, which ``python -O`` would strip.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from cadasg_dist.errors import ConfigError


def check_noise_multiplier(value: float, *, name: str = "noise_multiplier", allow_zero: bool = False) -> float:
    """Return ``value`` as a float; raise unless it is finite and > 0 (or >= 0 with ``allow_zero``)."""
    return _checked(value, name, lambda v: math.isfinite(v) and v >= 0 and (v > 0 or allow_zero),
                    f"finite and {'>= 0' if allow_zero else '> 0'}",
                    f"a private mechanism needs Gaussian noise (sigma = {name} x sensitivity), use "
                    "PrivacyLedger.non_private() for a run without it.")


def check_sample_rate(value: float, *, name: str = "sample_rate") -> float:
    """Return ``value`` as a float; raise unless it lies in (0, 1]."""
    return _checked(value, name, lambda v: 0.0 < v <= 1.0, "in (0, 1]",
                    "it is the Poisson sampling probability of one row (expected batch size / number of "
                    "rows), 1.0 for a full pass.")


def check_delta(value: float, *, name: str = "delta") -> float:
    """Return ``value`` as a float; raise unless it lies in (0, 1)."""
    return _checked(value, name, lambda v: 0.0 < v < 1.0, "in (0, 1)",
                    "pick delta well below 1/n_rows (e.g. 1e-5).")


def check_epsilon(value: float, *, name: str = "target_epsilon") -> float:
    """Return ``value`` as a float; raise unless it is finite and > 0."""
    return _checked(value, name, _finite_positive, "finite and > 0", "a non-private run needs no calibration.")


def check_positive(value: float, *, name: str) -> float:
    """Return ``value`` as a float; raise unless it is finite and > 0."""
    return _checked(value, name, _finite_positive, "finite and > 0")


def check_steps(value: int, *, name: str = "steps", minimum: int = 1) -> int:
    """Return ``value`` as an int; raise unless it is an integer >= ``minimum``."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value != int(value)):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    value = int(value)
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _as_float(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}.")
    return float(value)


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _checked(value: float, name: str, ok: Callable[[float], bool], requirement: str, fix: str = "") -> float:
    """``value`` as a float if ``ok`` holds for it; else the one message shape of every check: what
    ``name`` must be, the value it got, and how to fix it."""
    value = _as_float(value, name)
    if not ok(value):
        raise ConfigError(f"{name} must be {requirement}, got {value!r}" + (f"; {fix}" if fix else "."))
    return value
