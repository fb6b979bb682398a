"""Input checks shared by the privacy modules.

Every check raises ``ConfigError`` (a ``ValueError``) naming the argument, the bad value and the
fix; none of them uses ``assert``, which ``python -O`` would strip.
"""

from __future__ import annotations

import math
import numbers

from cadasg_dist.errors import ConfigError


def check_noise_multiplier(value: float, *, name: str = "noise_multiplier", allow_zero: bool = False) -> float:
    """Return ``value`` as a float; raise unless it is finite and > 0 (or >= 0 with ``allow_zero``)."""
    value = _as_float(value, name)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(
            f"{name} must be finite and {bound}, got {value!r}; a private mechanism needs Gaussian "
            f"noise (sigma = {name} x sensitivity), use PrivacyLedger.non_private() for a run without it."
        )
    return value


def check_sample_rate(value: float, *, name: str = "sample_rate") -> float:
    """Return ``value`` as a float; raise unless it lies in (0, 1]."""
    value = _as_float(value, name)
    if not 0.0 < value <= 1.0:
        raise ConfigError(
            f"{name} must be in (0, 1], got {value!r}; it is the Poisson sampling probability of "
            f"one row (expected batch size / number of rows), 1.0 for a full pass."
        )
    return value


def check_delta(value: float, *, name: str = "delta") -> float:
    """Return ``value`` as a float; raise unless it lies in (0, 1)."""
    value = _as_float(value, name)
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"{name} must be in (0, 1), got {value!r}; pick delta well below 1/n_rows (e.g. 1e-5)."
        )
    return value


def check_epsilon(value: float, *, name: str = "target_epsilon") -> float:
    """Return ``value`` as a float; raise unless it is finite and > 0."""
    value = _as_float(value, name)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{name} must be finite and > 0, got {value!r}; a non-private run needs no calibration."
        )
    return value


def check_positive(value: float, *, name: str) -> float:
    """Return ``value`` as a float; raise unless it is finite and > 0."""
    value = _as_float(value, name)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be finite and > 0, got {value!r}.")
    return value


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
