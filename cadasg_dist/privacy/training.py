"""Private training: DP-SGD for every network that reads real rows, a calibrated noisy cache, and
one ledger for the whole run (preprocessing, every step, the final cache pass).

Privacy caveats first:

* One training step reads ONE Poisson sample of units (rate q) through several Gaussian releases:
  the critic's clipped gradient (``critic_steps`` times), the utility predictor's, the
  encoder+decoder's (reconstruction + β·KL) and the cache's clipped sufficient statistics. Releases
  that share a sample are not independent subsampled mechanisms: their adaptive composition on the
  sample is one Gaussian mechanism with σ_step⁻² = Σ_i σ_i⁻², subsampled once. The ledger records
  exactly that, one ``train_step[...]`` entry per step. Accounting the parts as separate subsampled
  mechanisms would under-report ε (q = 0.0255, 5,850 steps, four parts at σ = 2: 11.3 vs 14.9).
* Nothing unclipped reads a real row. The critic's fake term joins each example's clipped loss
  (the fake row is generated for that example's cell), and the generator's adversarial, covariance
  and utility terms are recomputed on cells drawn from the noisy cache (``public_terms``) instead of
  the batch's cells. The loss balancer sees the privatised VAE gradient's norm (debiased for the
  noise, which is post-processing) and the public terms' norms.
* Metrics computed on real rows (``loss_vae``, ``loss_critic``, ``loss_predictor``) are dropped
  from the history, the progress reports and the artifact.
* The table's size (rows and units) is treated as public, as in Opacus: it sets q and the default δ.
* The noise and the Poisson batches come from the OS's entropy, never from ``train.seed``: the seed
  is saved in the artifact, and noise anyone can replay protects nothing. A private run is
  therefore not bit-reproducible (weights are still initialised from the seed, which is public).

The budget split is documented in docs/privacy.md; the accounting in docs/privacy_accounting.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cadasg_dist.config import CacheConfig, CADASGConfig
from cadasg_dist.context.cache import ContextCache
from cadasg_dist.data.schema import Schema
from cadasg_dist.errors import ConfigError, InvalidDataError, PrivacyBudgetError
from cadasg_dist.model.losses import utility_loss
from cadasg_dist.model.networks import CADASGNetworks, ModelDims
from cadasg_dist.privacy import entropy
from cadasg_dist.privacy.adaptive import PerLayerAdaptiveClipper
from cadasg_dist.privacy.analysis import DEFAULT_RDP_ORDERS, compose_rdp, epsilon_from_history, rdp_to_epsilon
from cadasg_dist.privacy.calibrate import calibrate_noise
from cadasg_dist.privacy.ledger import Mechanism, PrivacyLedger
from cadasg_dist.privacy.per_sample import clip_and_noise, input_gradient, per_sample_grads
from cadasg_dist.privacy.step_scale import NoiseAwareSteps
from cadasg_dist.train.fit import EpochReport, ProgressFn, final_cache_pass
from cadasg_dist.train.step import Batch, Priors, TrainState, public_terms, train_step, vae_terms

log = logging.getLogger(__name__)

# Shares of the preprocessing budget: bounds only need coarse detection, quantiles need accuracy.
PREPROCESS_SPLIT = {"preprocess/bounds": 0.25, "preprocess/histograms": 0.75}
CLASS_MARGINALS = "preprocess/class_marginals"  # its share: privacy.class_marginals_share
CONTEXT_MARGINALS = "preprocess/context_marginals"  # its share: privacy.context_marginals_share
FINAL_CACHE = "cache/final"
# The cache release is six blocks (n, Σx | Σxxᵀ | Σz, Σzzᵀ, Σvar), all at one multiplier (docs/privacy.md).
CACHE_BLOCKS = 6
# Metrics computed on real rows: never reported or saved in a private run.
REAL_ROW_METRICS = ("loss_vae", "loss_critic", "loss_predictor")
# vmap chunks hold at most this many per-example floats of the largest weight: measured on CPU,
# chunks of ~64 examples made the 256-wide critic's per-example gradients 1.5x faster, while
# chunking the 128-wide one (all 500 at once) made it slower.
CHUNK_FLOATS = 6_000_000


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

    def full_pass_mechanisms(self, names: Sequence[str]) -> list[Mechanism]:
        return [Mechanism(name=n, noise_multiplier=self.full_pass[n], sample_rate=1.0) for n in names]


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
    p = cfg.privacy
    delta = p.delta if p.delta is not None else default_delta(n_units)
    q = min(1.0, cfg.train.batch_size / n_rows)
    per_epoch = max(1, round(1.0 / q))
    steps = per_epoch * cfg.resolved_epochs(n_rows)  # train.epochs = 0: automatic, as CADASG.prepare resolves it
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
                      steps=steps, full_pass=full, step_sigma=sigma, parts=parts)


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


@dataclass
class PrivateBatch(Batch):
    units: Tensor | None = None  # (B,) index of each row's unit within the batch; None = one row per unit


class DPState:
    """DP hooks that ``train_step`` calls when ``state.dp`` is set, plus the run's accounting.

    Privacy: every ``privatize_*`` hook computes per-example gradients of the terms that read real
    rows, averages them per unit, clips each unit to ``max_grad_norm``, adds N(0, (σ·C)²) and
    divides by the *expected* number of units q·N (``clip_and_noise``).
    """

    def __init__(self, cfg: CADASGConfig, plan: BudgetPlan, ledger: PrivacyLedger, *, n_units: int,
                 has_utility: bool, strata: int, n_cells: int, seed: int | None = None) -> None:
        self.plan = plan
        self.ledger = ledger
        self.clip = cfg.privacy.max_grad_norm
        self.expected_units = plan.sample_rate * n_units
        self.public_rows = cfg.train.batch_size  # generated rows per step for the public terms
        self.name = step_name(cfg, has_utility)
        self.target = cfg.privacy.epsilon
        self.steps_taken = 0
        self.stop_reason: str | None = None
        self.final_released = False
        self.noise = _generator(seed, 7919)  # None: secret (OS entropy); a seed only for tests
        self._strata = strata
        self._cell_weights = torch.ones(n_cells)
        self._vae: dict[str, Tensor] = {}
        self._pair: nn.ModuleDict | None = None
        self._final = plan.full_pass.get(FINAL_CACHE)
        self._per_layer = cfg.privacy.clipping == "per_layer"
        self._clippers: dict[str, PerLayerAdaptiveClipper] = {}  # per part, with privacy.clipping = per_layer
        self._quantile, self._clip_rate = cfg.privacy.clip_quantile, cfg.privacy.clip_learning_rate
        self._max_step_scale = cfg.privacy.max_step_scale
        self._vae_weight = 1.0  # the balancer's weight on the last VAE release
        self.step_scales: dict[str, NoiseAwareSteps] = {}

    def attach(self, state: TrainState) -> None:
        """Make ``state``'s steps private (``state.dp = self``) and, with ``privacy.max_step_scale`` > 1,
        hook its optimizers to scale each tensor's Adam step for the known noise (post-processing)."""
        state.dp = self
        if self._max_step_scale <= 1.0 or self.step_scales:
            return
        nets = state.nets
        pair = self._encoder_decoder(nets)
        parts = {"critic": (state.opt_critic, nets.critic, "dpsgd/critic"),
                 "utility": (state.opt_utility, nets.utility, "dpsgd/utility"),
                 "generator": (state.opt_generator, pair, "dpsgd/vae")}
        for key, (opt, module, part) in parts.items():
            if part not in self.plan.parts:
                continue
            named = list(module.named_parameters())
            weight = (lambda: self._vae_weight) if part == "dpsgd/vae" else (lambda: 1.0)

            def stds(named: list = named, part: str = part, weight: Any = weight) -> dict[int, float]:
                w = weight()
                return {id(p): w * self.gradient_noise_std(part, n) for n, p in named}

            self.step_scales[key] = NoiseAwareSteps(opt, stds, self._max_step_scale)

    def gradient_noise_std(self, part: str, name: str) -> float:
        """Standard deviation of the noise on each coordinate of tensor ``name``'s gradient, as the
        optimizer sees it (after the division by the expected batch)."""
        return self._noise_std(part, name) / self.expected_units

    # --- the hooks train_step calls --------------------------------------------------------------
    def privatize_critic(self, nets: CADASGNetworks, batch: Batch, fake: Tensor, onehot: Tensor, alpha: Tensor,
                         cfg: CADASGConfig) -> None:
        """DP gradient of the whole critic loss D(x̃_i) − D(x_i) + λ·GP_i, REPLACING the critic's .grad.

        The fake row x̃_i is generated for example i's cell, so its term joins i's clipped loss; the
        fake term step.py already back-propagated (a mean over the batch's cells) is discarded.
        """
        lam = cfg.loss.gradient_penalty

        def example_loss(call: Any, x: Tensor, fk: Tensor, c: Tensor, a: Tensor) -> Tensor:
            c1 = c.unsqueeze(0)
            mixed = a * x + (1 - a) * fk
            slope = input_gradient(lambda z: call(z.unsqueeze(0), c1), mixed)
            penalty = ((slope.pow(2).sum() + 1e-12).sqrt() - 1.0).pow(2)
            return (call(fk.unsqueeze(0), c1) - call(x.unsqueeze(0), c1)).squeeze(0) + lam * penalty

        grads = _per_example(nets.critic, example_loss, batch.x, fake.detach(), onehot, alpha)
        _write(nets.critic, self._release(grads, batch, "dpsgd/critic"), scale=1.0)

    def privatize_utility(self, nets: CADASGNetworks, batch: Batch, onehot: Tensor, cfg: CADASGConfig) -> None:
        spans = nets.dims.target_spans

        def example_loss(call: Any, x: Tensor, c: Tensor) -> Tensor:
            return utility_loss(call(x.unsqueeze(0), c.unsqueeze(0)), x.unsqueeze(0), spans).squeeze(0)

        grads = _per_example(nets.utility, example_loss, batch.x, onehot)
        _write(nets.utility, self._release(grads, batch, "dpsgd/utility"), scale=1.0)

    def privatize_vae(self, nets: CADASGNetworks, batch: Batch, onehot: Tensor, eps: Tensor, cfg: CADASGConfig,
                      shared: list[Tensor]) -> float:
        """DP gradient of L_rec + β·L_KL for encoder+decoder, stored for ``scale_private_grads``.

        Returns the norm of the privatised gradient on ``shared``, debiased for the noise's expected
        contribution (post-processing), for the loss balancer.
        """
        pair = self._encoder_decoder(nets)
        beta, dims = cfg.loss.kl_beta, nets.dims

        def example_loss(call: Any, x: Tensor, c: Tensor, e: Tensor) -> Tensor:
            view = SimpleNamespace(encoder=call["encoder"], decoder=call["decoder"], dims=dims)
            loss, _, _ = vae_terms(view, x.unsqueeze(0), c.unsqueeze(0), e.unsqueeze(0), beta)
            return loss.squeeze(0)

        self._vae = self._release(_per_example(pair, example_loss, batch.x, onehot, eps), batch, "dpsgd/vae")
        names = {id(p): n for n, p in pair.named_parameters()}
        square = sum(float(self._vae[names[id(p)]].pow(2).sum())
                     - p.numel() * (self._noise_std("dpsgd/vae", names[id(p)]) / self.expected_units) ** 2
                     for p in shared)
        return math.sqrt(max(square, 0.0))

    def scale_private_grads(self, nets: CADASGNetworks, weight: float) -> None:
        self._vae_weight = weight
        _write(self._encoder_decoder(nets), self._vae, scale=weight)

    def public_terms(self, nets: CADASGNetworks, priors: Priors, cfg: CADASGConfig, generator: torch.Generator
                     ) -> dict[str, Tensor]:
        """The generator's public terms on ``public_rows`` rows of cells drawn from the noisy cache.

        The same terms as the local step (``step.public_terms``); only the cells differ.
        """
        cells = torch.multinomial(self._cell_weights, self.public_rows, replacement=True, generator=generator)
        cells = cells.to(nets.device)
        return public_terms(nets, priors, cells, nets.one_hot(cells // self._strata), generator, cfg)

    def account_step(self, cache: ContextCache) -> None:
        """Record the step (all its releases, one composed mechanism) and refresh the public cell
        weights from the cache it just released."""
        self.ledger.record(name=self.name, noise_multiplier=self.plan.step_sigma,
                           sample_rate=self.plan.sample_rate, steps=1)
        self.steps_taken += 1
        counts = cache.cell_counts().float()
        self._cell_weights = counts if float(counts.sum()) > 0 else torch.ones_like(counts)

    def step_metrics(self) -> dict[str, float]:
        """The mean Adam step scale per network (``privacy.max_step_scale``); empty when off."""
        return {f"step_scale_{key}": hooks.mean_scale() for key, hooks in self.step_scales.items()}

    # --- budget ---------------------------------------------------------------------------------
    def epsilon(self) -> float:
        return self.ledger.epsilon()

    def next_step_fits(self) -> bool:
        """Whether one more step, plus the reserved final cache pass, stays within the target."""
        history = [m.history_entry() for m in self.ledger.mechanisms]
        history.append((self.plan.step_sigma, self.plan.sample_rate, 1))
        if self._final is not None and not self.final_released:
            history.append((self._final, 1.0, 1))
        return epsilon_from_history(history, delta=self.plan.delta) <= self.target

    def account_final(self) -> None:
        self.ledger.record(name=FINAL_CACHE, noise_multiplier=self._final, sample_rate=1.0, steps=1)
        self.final_released = True

    def report(self) -> dict[str, Any]:
        """Plain data for the artifact's meta: the plan, what was spent, and whether training stopped early."""
        p = self.plan
        return {
            "epsilon_target": p.epsilon, "delta": p.delta, "epsilon_spent": self.epsilon(),
            "sample_rate": p.sample_rate, "expected_units_per_step": self.expected_units,
            "steps_planned": p.steps, "steps_taken": self.steps_taken, "stopped_early": self.stop_reason is not None,
            "stop_reason": self.stop_reason, "max_grad_norm": self.clip, "renyi_order": p.order,
            "noise_multipliers": {"train_step": p.step_sigma, **p.parts, **p.full_pass},
            "clipping": "per_layer" if self._per_layer else "flat",
            **({"final_thresholds": {part: c.state_dict() for part, c in self._clippers.items()}}
               if self._per_layer else {}),
        }

    # --- helpers --------------------------------------------------------------------------------
    def _release(self, grads: dict[str, Tensor], batch: Batch, part: str) -> dict[str, Tensor]:
        units = getattr(batch, "units", None)
        if units is not None:
            grads = _per_unit(grads, units)
        if self._per_layer:
            if part not in self._clippers:
                # Andrew et al.'s count noise: about a twentieth of the expected batch
                self._clippers[part] = PerLayerAdaptiveClipper(
                    list(grads), clip=self.clip, target_quantile=self._quantile, learning_rate=self._clip_rate,
                    count_noise_std=max(self.expected_units / 20, 1.0))
            return self._clippers[part].release(grads, noise_multiplier=self.plan.parts[part], generator=self.noise,
                                                expected_batch_size=self.expected_units)
        return clip_and_noise(grads, max_grad_norm=self.clip, noise_multiplier=self.plan.parts[part],
                              generator=self.noise, expected_batch_size=self.expected_units)

    def _noise_std(self, part: str, name: str) -> float:
        """Standard deviation of the noise the last release of ``part`` added to tensor ``name``."""
        if self._per_layer:
            return self._clippers[part].last_stds[name]
        return self.plan.parts[part] * self.clip

    def _encoder_decoder(self, nets: CADASGNetworks) -> nn.ModuleDict:
        if self._pair is None:
            self._pair = nn.ModuleDict({"encoder": nets.encoder, "decoder": nets.decoder})
        return self._pair


def _per_example(module: nn.Module, loss: Any, *batch: Tensor) -> dict[str, Tensor]:
    largest = max(p.numel() for p in module.parameters() if p.requires_grad)
    chunk = max(16, CHUNK_FLOATS // largest)
    return per_sample_grads(module, loss, *batch, chunk_size=chunk if chunk < len(batch[0]) else None)


def _generator(seed: int | None, offset: int) -> torch.Generator:
    return torch.Generator().manual_seed(entropy.secret_seed() if seed is None else seed + offset)


def _per_unit(grads: dict[str, Tensor], units: Tensor) -> dict[str, Tensor]:
    """Mean per-example gradient of each unit's rows: {name: (U, *shape)}."""
    n = int(units.max()) + 1 if len(units) else 0
    counts = torch.bincount(units, minlength=n).clamp_min(1)
    out = {}
    for name, g in grads.items():
        summed = g.new_zeros((n, *g.shape[1:])).index_add_(0, units, g)
        out[name] = summed / counts.view(-1, *([1] * (g.dim() - 1))).to(g.dtype)
    return out


def _write(module: nn.Module, grads: dict[str, Tensor], *, scale: float) -> None:
    for name, p in module.named_parameters():
        if name in grads:
            p.grad = (scale * grads[name]).to(p.dtype)


class UnitSampler:
    """Poisson sampling of units: each unit joins each batch independently with probability q."""

    def __init__(self, units: np.ndarray, sample_rate: float, seed: int | None = None) -> None:
        order = np.argsort(units, kind="stable")
        self.rows = torch.from_numpy(order)
        counts = np.bincount(units)
        self.starts = torch.from_numpy(np.r_[0, np.cumsum(counts)[:-1]])
        self.counts = torch.from_numpy(counts)
        self.q = sample_rate
        self.generator = _generator(seed, 104729)  # None: secret; amplification needs a secret sample

    def sample(self) -> tuple[Tensor, Tensor]:
        """(rows, unit index within the batch) of one Poisson batch (may be empty)."""
        chosen = (torch.rand(len(self.counts), generator=self.generator) < self.q).nonzero().squeeze(1)
        sizes = self.counts[chosen]
        local = torch.repeat_interleave(torch.arange(len(chosen)), sizes)
        offsets = torch.arange(int(sizes.sum())) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
        rows = self.rows[torch.repeat_interleave(self.starts[chosen], sizes) + offsets]
        return rows, local


def fit_private(config: CADASGConfig, x: np.ndarray, context: np.ndarray, dims: ModelDims, schema: Schema,
                progress: ProgressFn | None = None, *, units: np.ndarray | None = None,
                ledger: PrivacyLedger | None = None) -> tuple[TrainState, ContextCache, PrivacyLedger]:
    """Train with (ε, δ)-DP on (N, D) features ``x`` and (N,) context ids; returns state, cache, ledger.

    ``units`` (N,) gives each row's privacy unit (at most ``privacy.max_rows_per_unit`` rows each;
    None = one row per unit); ``ledger`` holds the preprocessing releases already spent
    (``privacy.preprocessing.prepare_private``). Raises ``PrivacyBudgetError`` when the schema holds
    statistics read from raw rows or the budget cannot cover a single step.
    """
    cfg = config
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    raw = schema.private_statistics()
    if raw:
        raise PrivacyBudgetError(f"the schema holds statistics read from raw rows outside the ledger: "
                                 f"{', '.join(raw)}; build it with privacy.preprocessing.prepare_private")
    n_rows = len(x)
    unit_ids = np.arange(n_rows) if units is None else np.asarray(units, dtype=np.int64)
    rows_per_unit = 1 if units is None else cfg.privacy.max_rows_per_unit
    if units is not None and (len(unit_ids) != n_rows or np.bincount(unit_ids).max() > rows_per_unit):
        raise InvalidDataError(f"units must give one unit per row with at most privacy.max_rows_per_unit="
                               f"{rows_per_unit} rows each; cap them with privacy.preprocessing.cap_units")
    n_units = int(unit_ids.max()) + 1
    has_utility = bool(dims.target_spans)
    plan = plan_budget(cfg, n_rows=n_rows, n_units=n_units, has_utility=has_utility,
                       spent=ledger.mechanisms if ledger is not None else ())
    if ledger is None:
        ledger = PrivacyLedger(delta=plan.delta)
    if ledger.delta != plan.delta:
        raise ConfigError(f"the ledger's delta {ledger.delta} differs from the run's {plan.delta}")
    run_cfg = dataclasses.replace(cfg, cache=cache_noise(cfg.cache, plan.parts["cache/ema"], rows_per_unit))
    state = TrainState.create(dims, run_cfg)
    cache = ContextCache(dims.contexts, dims.features, cfg.model.latent_dim, run_cfg.cache, dims.strata)
    dp = DPState(run_cfg, plan, ledger, n_units=n_units, has_utility=has_utility, strata=dims.strata,
                 n_cells=cache.n_cells)
    state.generator.manual_seed(entropy.secret_seed())  # it draws the cache's noise
    dp.attach(state)
    if not dp.next_step_fits():
        raise PrivacyBudgetError(f"epsilon={cfg.privacy.epsilon} does not cover a single training step at noise "
                                 f"multiplier {plan.step_sigma:.4g}; raise epsilon or privacy.noise_multiplier")
    xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    cs = torch.from_numpy(context.astype(np.int64))
    sampler = UnitSampler(unit_ids, plan.sample_rate)
    _train(run_cfg, state, cache, dp, xs, cs, sampler, units is not None, progress)
    if cfg.cache.final_pass:
        cache.config = cache_noise(cfg.cache, plan.full_pass[FINAL_CACHE], rows_per_unit)
        final_cache_pass(run_cfg, state, cache, xs, cs)
        dp.account_final()
        cache.config = run_cfg.cache
    log.info("private training spent epsilon=%.4f of %.4f (delta=%.3g) in %d steps", ledger.epsilon(),
             cfg.privacy.epsilon, plan.delta, dp.steps_taken)
    return state, cache, ledger


def _train(cfg: CADASGConfig, state: TrainState, cache: ContextCache, dp: DPState, xs: Tensor, cs: Tensor,
           sampler: UnitSampler, by_unit: bool, progress: ProgressFn | None) -> None:
    plan, start = dp.plan, time.perf_counter()
    epochs = plan.steps // plan.steps_per_epoch
    average = WeightAverage(state.nets, cfg.train.weight_averaging)
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        done = 0
        for _ in range(plan.steps_per_epoch):
            if not dp.next_step_fits():
                dp.stop_reason = (f"the next step would exceed epsilon={dp.target} (spent {dp.epsilon():.4f} after "
                                  f"{dp.steps_taken} of {plan.steps} steps)")
                log.warning("private training stopped early: %s", dp.stop_reason)
                break
            rows, local = sampler.sample()
            batch = PrivateBatch(xs[rows], cs[rows], units=local if by_unit else None)
            metrics = train_step(cfg, state, batch, cache)
            average.update()
            done += 1
            for k, v in metrics.items():
                if k not in REAL_ROW_METRICS:
                    sums[k] = sums.get(k, 0.0) + v
        if done:
            means = {k: v / done for k, v in sums.items()}
            state.history.append({"epoch": epoch + 1, **means})
            if progress is not None:
                progress(EpochReport(epoch + 1, epochs, time.perf_counter() - start, means, dp.epsilon(),
                                     state=state, cache=cache))
        if dp.stop_reason is not None:
            break
    average.load_into()


class WeightAverage:
    """EMA of a module's parameters over the training steps (Polyak averaging), loaded into the
    module at the end. Each iterate is already a DP release, so their average is post-processing."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = list(module.parameters())
        self.average = [p.detach().clone() for p in self.params] if decay > 0 else []

    @torch.no_grad()
    def update(self) -> None:
        if self.average:
            torch._foreach_mul_(self.average, self.decay)
            torch._foreach_add_(self.average, [p.detach() for p in self.params], alpha=1.0 - self.decay)

    @torch.no_grad()
    def load_into(self) -> None:
        for p, a in zip(self.params, self.average):
            p.copy_(a)
