"""The defaults that depend on whether a run is private: one profile without privacy, one with it.

A key listed here defaults to ``None`` ("auto") in its section. ``CADASGConfig.resolved`` is the one
place that fills it, from ``PRIVATE`` when ``privacy.epsilon`` is finite and from ``NON_PRIVATE``
otherwise; a value the user sets, in Python, YAML, a flag, ``--set`` or the Flower run config, is
never replaced, and a saved model holds the resolved values.

Why the private profile differs: DP-SGD's noise grows with the number of parameters it covers (a
smaller latent space and utility head), every step pays for its noise (fewer, larger steps), and
the context cache's noise on second moments scales with clip² (tighter clips; encoded rows have norm
about 4) while a slower EMA averages more of its noisy batch releases. These are the settings the
benchmarks measured under DP (``bench/privacy.py``, docs/privacy.md); ``configs/private.yaml``
used to carry them.
"""

from __future__ import annotations

from typing import Any

NON_PRIVATE: dict[str, Any] = {
    "model.latent_dim": 32,
    "model.utility_hidden": (128,),
    "cache.ema_alpha": 0.95,
    "cache.clip_x": 8.0,
    "cache.clip_z": 8.0,
    "train.batch_size": 500,
}
PRIVATE: dict[str, Any] = {
    "model.latent_dim": 16,
    "model.utility_hidden": (64,),
    "cache.ema_alpha": 0.99,
    "cache.clip_x": 5.0,
    "cache.clip_z": 5.0,
    "train.batch_size": 1000,
}
# Automatic epochs (``train.epochs = 0``) of a private run, whatever the table's size: the training
# step's noise is calibrated to spend the budget over these steps, and since that noise grows about
# as the square root of the steps, more epochs buy optimisation (and cost time) rather than signal.
# Measured (docs/privacy.md, "Defaults of a private run"): 10 epochs instead of 30 gave the same mean
# utility on rwm5yr at epsilon 1 and 3; 30 epochs of a 3,000-row sample of HI fit in under a minute
# on one core at epsilon 1, and 60 scored no better. The row count does not enter, so the schedule
# reveals nothing about it.
PRIVATE_EPOCHS = 30
AUTO_KEYS: tuple[str, ...] = tuple(NON_PRIVATE)


def profile(private: bool) -> dict[str, Any]:
    """The values of ``AUTO_KEYS`` for a private (``True``) or non-private run, as dotted keys."""
    return dict(PRIVATE if private else NON_PRIVATE)
