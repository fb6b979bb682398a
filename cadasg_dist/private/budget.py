"""The budget plan of a private run: every noise multiplier, fixed before any real row is read.

A private fit is planned once (``private.prepare.prepare_private`` finalises it after the
preprocessing releases) and every runner trains under that one ``BudgetPlan``: the central fit,
the Ray Train workers and, with their own sizes, the Flower silos. Planning reads no data; the
table's size (rows and units) is treated as public and sets q and the default δ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cadasg_dist.config import CacheConfig, CADASGConfig
from cadasg_dist.errors import PrivacyBudgetError
from cadasg_dist.privacy.analysis import DEFAULT_RDP_ORDERS, compose_rdp, epsilon_from_history, rdp_to_epsilon
from cadasg_dist.privacy.calibrate import calibrate_noise
from cadasg_dist.privacy.ledger import Mechanism

# Shares of the preprocessing budget: bounds only need coarse detection, quantiles need accuracy.
PREPROCESS_SPLIT = {"preprocess/bounds": 0.25, "preprocess/histograms": 0.75}
COUNT = "preprocess/count"  # its share: privacy.count_share
CLASS_MARGINALS = "preprocess/class_marginals"  # its share: privacy.class_marginals_share
CONTEXT_MARGINALS = "preprocess/context_marginals"  # its share: privacy.context_marginals_share
FINAL_CACHE = "cache/final"
# The cache release is six blocks (n, Σx | Σxxᵀ | Σz, Σzzᵀ, Σvar), all at one multiplier (docs/concepts/privacy.md).
CACHE_BLOCKS = 6



def default_delta(n_units: int) -> float:
    """δ = 1e-5, or 1/n² when smaller (n = number of privacy units)."""
    return min(1e-5, 1.0 / float(n_units) ** 2)


def rdp_budget(epsilon: float, delta: float, order: float) -> float:
    """The Rényi-DP at ``order`` that converts to exactly ``epsilon`` at ``delta`` (the inverse of
    Opacus's ``get_privacy_spent``, Balle et al. 2020)."""
    return epsilon + (math.log(delta) + math.log(order)) / (order - 1) - math.log((order - 1) / order)


@dataclass(frozen=True)
class BudgetPlan:
    """Every noise multiplier of a private run, fixed before any real row is read."""

    epsilon: float
    delta: float
    order: float  # the Rényi order at which the one-pass shares are taken
    sample_rate: float
    steps_per_epoch: int
    steps: int
    full_pass: dict[str, float]  # σ of each q = 1 release: preprocessing parts and the final cache pass
    step_sigma: float  # effective σ of one training step (all its parts composed)
    parts: dict[str, float]  # σ of each release inside a step: "dpsgd/critic", ..., "cache/ema"
    # The rows and privacy units the plan is for: in a private run the released (noisy) counts,
    # never the exact ones (``count_release``); q, δ and the DP step's divisor follow from them.
    n_rows: float = 0.0
    n_units: float = 0.0

    def full_pass_mechanisms(self, names: Sequence[str]) -> list[Mechanism]:
        return [Mechanism(name=n, noise_multiplier=self.full_pass[n], sample_rate=1.0) for n in names]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for a Ray worker's config); ``from_dict`` gives the same plan back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BudgetPlan:
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})


def step_weights(cfg: CADASGConfig, has_utility: bool) -> dict[str, float]:
    """Weight of each release in one step (a critic step counts ``critic_steps`` times)."""
    p = cfg.privacy
    weights = {"dpsgd/critic": p.weight_critic * cfg.train.critic_steps}
    if has_utility:
        weights["dpsgd/utility"] = p.weight_utility
    weights.update({"dpsgd/vae": p.weight_vae, "cache/ema": p.weight_cache})
    return weights


def step_name(cfg: CADASGConfig, has_utility: bool) -> str:
    parts = [f"dpsgd/critic*{cfg.train.critic_steps}" if cfg.train.critic_steps > 1 else "dpsgd/critic"]
    parts += (["dpsgd/utility"] if has_utility else []) + ["dpsgd/vae", "cache/ema"]
    return f"train_step[{','.join(parts)}]"


def plan_budget(cfg: CADASGConfig, *, n_rows: int, n_units: int, has_utility: bool,
                preprocessing: Sequence[str] = (), spent: Sequence[Mechanism] = ()) -> BudgetPlan:
    """Calibrate a private run; deterministic, reads no data.

    ``preprocessing`` names the preprocessing releases still to come; ``spent`` holds those already
    recorded. Rule: at the order α* where training alone would spend the whole target, each q = 1
    release gets its share of the Rényi budget R(α*) (σ = sqrt(α*/(2·share·R))); the training step's σ
    is then calibrated so that everything composed has ε ≤ target. Raises ``PrivacyBudgetError``.
    """
    cfg = cfg.resolved(n_rows)  # the batch size and automatic epochs as every runner resolves them
    p = cfg.privacy
    delta = p.delta if p.delta is not None else default_delta(n_units)
    q = min(1.0, cfg.train.batch_size / n_rows)
    per_epoch = max(1, round(1.0 / q))
    steps = per_epoch * cfg.train.epochs
    orders = DEFAULT_RDP_ORDERS
    if p.noise_multiplier is not None:  # the order where training would stop: its last step that fits
        sigma0, fitting = p.noise_multiplier, _steps_within(p.noise_multiplier, q, steps, p.epsilon, delta)
        if fitting == 0:
            raise PrivacyBudgetError(f"epsilon={p.epsilon} does not cover a single training step at noise multiplier "
                                     f"{sigma0:.4g} and q={q:.4g}; raise epsilon or privacy.noise_multiplier")
    else:
        try:
            sigma0 = calibrate_noise(target_epsilon=p.epsilon, delta=delta, sample_rate=q, steps=steps)
        except PrivacyBudgetError as err:
            raise PrivacyBudgetError(f"epsilon={p.epsilon} cannot cover {steps} training steps at q={q:.4g}: "
                                     f"{err}") from None
        fitting = steps
    _, order = rdp_to_epsilon(rdp=compose_rdp([(sigma0, q, max(fitting, 1))], orders=orders), orders=orders,
                              delta=delta)
    budget = rdp_budget(p.epsilon, delta, order)
    if budget <= 0:
        raise PrivacyBudgetError(f"epsilon={p.epsilon} at delta={delta:.3g} is below what the accountant can "
                                 "certify; raise epsilon or delta")
    own = {CLASS_MARGINALS: p.class_marginals_share, CONTEXT_MARGINALS: p.context_marginals_share}
    shares = {name: own.get(name) or p.preprocessing_share * PREPROCESS_SPLIT[name] for name in preprocessing}
    if cfg.cache.final_pass:
        shares[FINAL_CACHE] = p.final_cache_share
    planned = {name: math.sqrt(order / (2.0 * share * budget)) for name, share in shares.items()}
    extra = list(spent) + [Mechanism(name=n, noise_multiplier=s, sample_rate=1.0) for n, s in planned.items()]
    full = {**{m.name: m.noise_multiplier for m in spent}, **planned}
    if p.noise_multiplier is not None:
        sigma = p.noise_multiplier
    else:
        try:
            sigma = calibrate_noise(target_epsilon=p.epsilon, delta=delta, sample_rate=q, steps=steps,
                                    extra_mechanisms=extra)
        except PrivacyBudgetError as err:
            raise PrivacyBudgetError(f"after the one-pass releases, epsilon={p.epsilon} cannot cover {steps} "
                                     f"training steps: {err}") from None
    weights = step_weights(cfg, has_utility)
    total = sum(weights.values())
    per_release = {n: w / cfg.train.critic_steps if n == "dpsgd/critic" else w for n, w in weights.items()}
    parts = {n: sigma * math.sqrt(total / w) for n, w in per_release.items()}
    return BudgetPlan(epsilon=p.epsilon, delta=delta, order=order, sample_rate=q, steps_per_epoch=per_epoch,
                      steps=steps, full_pass=full, step_sigma=sigma, parts=parts, n_rows=n_rows, n_units=n_units)


def _steps_within(sigma: float, q: float, steps: int, epsilon: float, delta: float) -> int:
    """The most steps (at most ``steps``) of a subsampled Gaussian (σ, q) alone within ``epsilon``."""
    lo, hi = 0, steps
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if epsilon_from_history([(sigma, q, mid)], delta=delta) <= epsilon:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cache_noise(config: CacheConfig, sigma: float, rows_per_unit: int) -> CacheConfig:
    """Cache config whose release is a Gaussian mechanism with multiplier ``sigma`` per unit.

    The six blocks each get multiplier σ·√6 (Σ_b σ_b⁻² = σ⁻²); one unit adds at most
    ``rows_per_unit`` clipped rows, so every block's sensitivity, and its noise, scales by it.
    """
    s = sigma * math.sqrt(CACHE_BLOCKS) * rows_per_unit
    return dataclasses.replace(config, sigma_mean=s, sigma_cov=s, sigma_latent=s)


def private_configs(cfg: CADASGConfig, plan: BudgetPlan, rows_per_unit: int) -> tuple[CADASGConfig, CacheConfig | None]:
    """The run's config with the EMA cache's release noise, and the final pass's cache config
    (None without a final pass): what every private runner trains with."""
    run_cfg = dataclasses.replace(cfg, cache=cache_noise(cfg.cache, plan.parts["cache/ema"], rows_per_unit))
    final = plan.full_pass.get(FINAL_CACHE)
    return run_cfg, None if final is None else cache_noise(cfg.cache, final, rows_per_unit)


# The reference δ at which the count's share of the budget is sized: the count is released before
# the run's δ is known (the default δ follows from the released count), so its noise is fixed from
# ε alone; the ledger then accounts it at the run's δ like every other release.
COUNT_REFERENCE_DELTA = 1e-5


def count_sigma(epsilon: float, share: float) -> float:
    """Noise multiplier of the released count: ``share`` of the zero-concentrated budget that
    (ε, 1e-5) gives, ρ = (sqrt(ε + ln 1/δ) − sqrt(ln 1/δ))², so σ = 1 / sqrt(2·share·ρ). Reads no
    data: about 49 units at ε = 1 and 17 at ε = 3 with the default share of 1 %."""
    log_inv = math.log(1.0 / COUNT_REFERENCE_DELTA)
    rho = (math.sqrt(epsilon + log_inv) - math.sqrt(log_inv)) ** 2
    return 1.0 / math.sqrt(2.0 * share * rho)
