"""The one source of secret randomness for private runs.

Every random choice a private run makes from real records (DP noise, the rows kept per privacy
unit, the encoder's tie spreading, the sampling of batches) is seeded here, from the operating
system's entropy: with a known seed the noise could be replayed and subtracted. Non-private runs
use ``train.seed`` instead and never come here.

The test suite replaces ``secret_seed`` with a seeded stream (tests/conftest.py) so that a private
fit is reproducible under test; nothing in the library may do so.
"""

from __future__ import annotations

import secrets

import numpy as np


def secret_seed(bits: int = 63) -> int:
    """A fresh seed of ``bits`` bits from the OS's cryptographic entropy."""
    return secrets.randbits(bits)


def secret_generator() -> np.random.Generator:
    """A NumPy generator seeded from ``secret_seed`` (128 bits, the generator's full state size)."""
    return np.random.default_rng(secret_seed(128))
