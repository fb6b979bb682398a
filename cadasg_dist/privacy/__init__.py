"""Formal differential privacy for CA-DASG: the ledger, noise calibration and DP-SGD pieces.

Privacy caveats first: ε is only meaningful if every read of the private table goes through a
recorded mechanism (``PrivacyLedger.record``), batches are Poisson-sampled (``poisson_batches``)
and each example's contribution is clipped before noise (``clip_and_noise``). See
docs/concepts/accounting.md for the accounting, the calibration rules and their proofs.
"""

from __future__ import annotations

import importlib
from typing import Any

# Where each public name lives. Imported on first use (PEP 562): a submodule such as
# ``privacy.ledger`` (every saved model reads one) then loads without the DP-SGD pieces.
_HOMES = {
    "adaptive": ("adaptive_clip_update", "gradient_noise_for_adaptive_clipping", "per_example_norms"),
    "analysis": ("DEFAULT_RDP_ORDERS", "recompute_epsilon"),
    "calibrate": ("calibrate_joint", "calibrate_noise"),
    "ledger": ("Mechanism", "PrivacyLedger"),
    "per_sample": ("FunctionalModule", "clip_and_noise", "input_gradient", "per_layer_clip_and_noise",
                   "per_layer_noise_stds", "per_layer_sensitivity", "per_sample_grads", "poisson_batches"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "DEFAULT_RDP_ORDERS",
    "FunctionalModule",
    "Mechanism",
    "PrivacyLedger",
    "adaptive_clip_update",
    "calibrate_joint",
    "calibrate_noise",
    "clip_and_noise",
    "gradient_noise_for_adaptive_clipping",
    "input_gradient",
    "per_layer_clip_and_noise",
    "per_layer_noise_stds",
    "per_example_norms",
    "per_layer_sensitivity",
    "per_sample_grads",
    "poisson_batches",
    "recompute_epsilon",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
