"""Formal differential privacy for CA-DASG: the ledger, noise calibration and DP-SGD pieces.

Privacy caveats first: ε is only meaningful if every read of the private table goes through a
recorded mechanism (``PrivacyLedger.record``), batches are Poisson-sampled (``poisson_batches``)
and each example's contribution is clipped before noise (``clip_and_noise``). See
docs/concepts/accounting.md for the accounting, the calibration rules and their proofs.
"""

from cadasg_dist.privacy.adaptive import (
    adaptive_clip_update,
    gradient_noise_for_adaptive_clipping,
    per_example_norms,
)
from cadasg_dist.privacy.analysis import DEFAULT_RDP_ORDERS, recompute_epsilon
from cadasg_dist.privacy.calibrate import calibrate_joint, calibrate_noise
from cadasg_dist.privacy.ledger import Mechanism, PrivacyLedger
from cadasg_dist.privacy.per_sample import (
    FunctionalModule,
    clip_and_noise,
    input_gradient,
    per_layer_clip_and_noise,
    per_layer_noise_stds,
    per_layer_sensitivity,
    per_sample_grads,
    poisson_batches,
)

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
