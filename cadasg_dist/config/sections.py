"""The sections of a run config, one frozen dataclass each, with their defaults.

These dataclasses are the one source of defaults (``CADASGConfig`` in ``core.py`` holds one of
each); a section checks its own fields' ranges where they do not depend on another section.
A field whose default depends on whether the run is private defaults to ``None`` ("auto": ``null``
in YAML): ``CADASGConfig.resolved`` fills it from ``profiles.py``, and a value the user sets wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from cadasg_dist.config.constraint import ConstraintConfig  # noqa: F401 (the constraints list's entry)
from cadasg_dist.config.parsing import require

ColumnKind = Literal["continuous", "integer", "categorical", "boolean", "datetime", "identifier", "derived"]


@dataclass(frozen=True)
class ColumnOverride:
    """What a user declares about one column.

    Everything here is *declared public*: bounds and categories given in config are not read from
    the data, so they cost no privacy budget. Anything left unset is estimated from the data and
    must be paid for by the privacy ledger when training is private.

    ``kind: derived`` declares a column a function of another: an indicator, 1 where column ``of``
    equals ``equals`` and 0 elsewhere (one-hot copies such as rwm5yr's edlevel1..4 of edlevel). Its
    values are never read or modelled; sampling computes it from the generated ``of``, so the
    dependency holds in every synthetic row.
    """

    # The column's kind, declared instead of inferred (identifier: dropped; derived: computed from `of`).
    kind: ColumnKind | None = None
    # Declared lower bound of a numeric column (public: costs no budget).
    min: float | None = None
    # Declared upper bound of a numeric column (public: costs no budget).
    max: float | None = None
    # Declared category set (public: costs no budget; a private run refuses undeclared text columns).
    categories: tuple[str, ...] | None = None
    of: str | None = None  # a derived column's source column
    equals: Any = None  # the source value where a derived column is 1


@dataclass(frozen=True)
class DataConfig:
    # Column name -> what is declared about it (a ColumnOverride): kind, bounds, categories.
    columns: dict[str, ColumnOverride] = field(default_factory=dict)
    # Continuous encoding: "quantile" (Gaussian quantile map, the default, chosen by
    # bench/encodings.py) or "standard" (affine to zero mean, unit variance).
    continuous_encoding: Literal["quantile", "standard"] = "quantile"
    # Points of the quantile grid of each numeric column's Gaussian quantile map.
    n_quantiles: int = 128
    # A numeric value holding at least this share of rows gets its own indicator span (1 = never).
    atom_share: float = 0.05
    # A text column with more distinct values than this (or unique per row) is treated as an
    # identifier and refused unless declared.
    max_categories: int = 200


@dataclass(frozen=True)
class ContextConfig:
    """How rows map to contexts: one or more columns, numeric ones cut into bands, dates into periods."""

    # The context columns: each row's context is the tuple of their values (or bands).
    columns: tuple[str, ...] = ()
    # Numeric column -> band edges, e.g. {"age": (0, 18, 40, 65, 120)}. Declared public.
    bands: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # Datetime column -> "year" | "quarter" | "month".
    periods: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    # Size of the latent code z the encoder produces and the cache's per-context prior models.
    # null = auto: 32, or 16 in a private run (DP-SGD's noise grows with the parameters it covers).
    latent_dim: int | None = None
    # 128-wide blocks: on HI, 60 epochs of (128, 128) scored higher (column shape 0.982, pair trend
    # 0.992, utility ratio 0.988) than 30 epochs of (256, 256) (0.976, 0.986, 0.984) at similar
    # cost, and sample about 2x faster.
    hidden: tuple[int, ...] = (128, 128)
    # Hidden layer widths of the WGAN-GP critic.
    critic_hidden: tuple[int, ...] = (128, 128)
    # Hidden layer widths of the auxiliary predictor of the target column; null = auto: (128,), or
    # (64,) in a private run.
    utility_hidden: tuple[int, ...] | None = None
    # A numeric target's value is cut into this many bins, each with its own latent prior per context.
    target_bins: int = 5
    # Gumbel-softmax temperature for categorical blocks seen by the critic.
    gumbel_tau: float = 0.2
    # Sampling moves generated one-column marginals onto the released ones (the preprocessing
    # histograms; cadasg_dist/model/calibration.py): categorical columns, continuous columns, both,
    # or none. Post-processing: no budget.
    calibrate_marginals: Literal["both", "categorical", "continuous", "off"] = "both"
    # ... and, per stratum of the target (its class; a numeric target's value bin, of target_bins),
    # each column's distribution among that stratum's rows onto a histogram by stratum (exact
    # without DP; a DP release of privacy.class_marginals_share with it).
    # "auto": on for a private fit at epsilon <= class_calibration_max_epsilon, off otherwise.
    # Measured (docs/concepts/decisions.md, "Per-class calibration at ε ≤ 3"): at epsilon 1 and 3 it lifts rwm5yr's
    # utility on two seeds each (1: 0.834 / 0.813 -> 0.879 / 0.882; 3: 0.889 / 0.858 -> 0.918 / 0.955);
    # at epsilon = 8 it cost rwm5yr (0.971 -> 0.920 on one model). true / false mean "on" / "off".
    calibrate_classes: Literal["auto", "on", "off"] = "auto"
    # Largest epsilon at which calibrate_classes "auto" turns the per-class calibration on.
    class_calibration_max_epsilon: float = 3.0
    # ... and, per context, each column's distribution among that context's rows onto a histogram
    # by context (exact without DP; a DP release of privacy.context_marginals_share with it), the
    # pinned target excepted. "auto": on for a private fit at epsilon <= context_calibration_max_epsilon.
    # Measured (docs/concepts/decisions.md, "Per-context calibration at ε ≤ 3"): diamonds at epsilon 3, worst context
    # 0.821 -> 0.884; HI and rwm5yr at epsilon 1 and 3 rose on utility and worst context.
    calibrate_contexts: Literal["auto", "on", "off"] = "auto"
    # Largest epsilon at which calibrate_contexts "auto" turns the per-context calibration on.
    context_calibration_max_epsilon: float = 3.0
    # The decoder reads each row's stratum (target class or value bin) besides its context, so the
    # class-conditional features are learnt by the networks (DP-SGD over all rows) rather than carried
    # only by each cell's latent prior (a noisy cache mean, poor for a rare class under DP).
    decoder_stratum: bool = True


@dataclass(frozen=True)
class LossConfig:
    """Initial weights of L = λw·L_WGAN + λkl·(L_rec + L_KL) + λcov·L_cov + λu·L_utility."""

    # Initial weight of the WGAN-GP adversarial term.
    wgan: float = 1.0
    # Initial weight of the VAE term (reconstruction + kl_beta * KL).
    kl: float = 1.0
    # Initial weight of the per-context covariance term (Frobenius distance of real and generated covariances).
    cov: float = 1.0
    # Initial weight of the auxiliary target predictor's loss.
    utility: float = 1.0
    # Weight of the KL divergence inside the VAE term (beta-VAE).
    kl_beta: float = 0.1
    # Weight of the critic's gradient penalty (WGAN-GP).
    gradient_penalty: float = 10.0
    # Rebalance the loss weights from their gradient norms during training.
    adaptive: bool = True
    # EMA factor of the adaptive weights and the bounds on the ratio to their initial value.
    balance_smoothing: float = 0.9
    # Lower bound on an adaptive weight, as a ratio to its initial value.
    balance_min: float = 0.05
    # Upper bound on an adaptive weight, as a ratio to its initial value.
    balance_max: float = 20.0


@dataclass(frozen=True)
class CacheConfig:
    # Decay of the exponential moving average of each context's sufficient statistics; null = auto:
    # 0.95, or 0.99 in a private run (a slower average of more noisy batch releases).
    ema_alpha: float | None = None
    # Noise multipliers of the Gaussian mechanism on the sufficient statistics (0 = no noise).
    # The privacy layer calibrates them when training is private.
    sigma_mean: float = 0.0
    # Noise multiplier on the second-moment sums (Σxxᵀ) of the cache (0 = no noise).
    sigma_cov: float = 0.0
    # Noise multiplier on the latent sums (Σz, Σzzᵀ) of the cache (0 = no noise).
    sigma_latent: float = 0.0
    # Each row's contribution to the cache's sums is clipped to this L2 norm (bounded sensitivity).
    # null = auto: 8.0, or 5.0 in a private run (encoded rows have norm about 4, and the noise on
    # second moments scales with clip^2).
    clip_x: float | None = None
    # L2 clip of each row's latent code in the cache's sums; null = auto, as clip_x.
    clip_z: float | None = None
    # Ridge added to every covariance when sampling from q_c(z).
    jitter: float = 1e-4
    # Re-estimate the cache over the whole table with the final encoder after training.
    final_pass: bool = True


@dataclass(frozen=True)
class TrainConfig:
    # 0 = automatic. Without privacy: enough epochs for about `target_steps` optimizer steps, within
    # [min_epochs, max_epochs], so a small table gets more passes and a large one fewer. In a private
    # run: 30 epochs whatever the table's size (the step's noise is calibrated to spend the budget
    # over them; docs/concepts/privacy.md, "Defaults of a private run").
    epochs: int = 0
    # Optimizer steps the automatic epoch count (epochs = 0) aims for.
    target_steps: int = 2500
    # Fewest epochs the automatic epoch count chooses.
    min_epochs: int = 20
    # Most epochs the automatic epoch count chooses.
    max_epochs: int = 300
    # null = auto: 500, or 1000 in a private run (fewer, larger steps: each step pays for its noise).
    batch_size: int | None = None
    # Adam learning rate of the encoder, decoder and utility predictor.
    lr_generator: float = 1e-3
    # Adam learning rate of the critic.
    lr_critic: float = 1e-3
    # Critic updates per generator update.
    critic_steps: int = 1
    # Adam weight decay of every network.
    weight_decay: float = 1e-6
    # Private training keeps an exponential moving average of the networks' weights with this decay
    # and releases the average instead of the last iterate (0 = the last iterate): it averages out
    # part of DP-SGD's noise and is post-processing of the noisy iterates (no budget).
    weight_averaging: float = 0.0
    # Seed of the initial weights and, without DP, of every draw (a private run's noise never follows it).
    seed: int = 0
    # Where the networks train: "cpu", "cuda", "cuda:N", or "auto" (the GPU when torch sees one).
    # Random draws and the context cache stay on the CPU, so a seed gives the same run on either.
    # Ray Train workers ignore it and take Ray's device (--use-gpu).
    device: str = "cpu"
    # Intra-op threads for torch on CPU (0 = torch's default). One by default: these MLPs gain little
    # from more, and with more busy processes than cores OpenMP spinning made training 8x slower
    # here (3 epochs of rwm5yr: 87 s with 2 threads vs 10 s with 1, other jobs running).
    threads: int = 1


@dataclass(frozen=True)
class PrivacyConfig:
    """Privacy target. ``epsilon = inf`` is explicit non-private training, flagged everywhere."""

    # The privacy target epsilon; inf (the default) is explicit non-private training.
    epsilon: float = math.inf
    # The privacy target delta; null picks 1/n² capped at 1e-5.
    delta: float | None = None
    # L2 clip of each unit's per-example gradient in DP-SGD.
    max_grad_norm: float = 1.0
    # Row-level privacy by default; a column name makes each unit (e.g. a patient id) the unit.
    unit: str | None = None
    # Rows kept per privacy unit (the rest are dropped at random) when privacy.unit is set.
    max_rows_per_unit: int = 5
    # Bounds and category sets not declared in data.columns: "dp" releases them with a DP mechanism
    # charged to the ledger; "declared" refuses to train and lists the columns to declare.
    preprocessing: Literal["dp", "declared"] = "dp"
    # A numeric column without declared bounds whose bounds release finds no magnitude bin above the
    # noise (a small table or a small epsilon): "error" stops before training with one message naming
    # every such column and what to declare; "drop" leaves them out of the model and the synthetic
    # table, with a warning naming them (the target, a context column or a derived column's source
    # still stops the run). Decided from the noisy release alone, so either keeps the guarantee.
    unreleased_bounds: Literal["error", "drop"] = "error"
    # Budget split (docs/concepts/privacy.md): shares of the Renyi-DP budget, at the order that sets
    # epsilon, given to the one-pass releases; DP-SGD training gets the rest.
    preprocessing_share: float = 0.1
    # Share of the budget given to the cache's final pass over the whole table.
    final_cache_share: float = 0.1
    # The per-class histograms of model.calibrate_classes (one release; no release when it is off or
    # the target gives no classes).
    class_marginals_share: float = 0.1
    # The per-context histograms of model.calibrate_contexts (one release; none when it is off).
    context_marginals_share: float = 0.1
    # The released row and unit count (preprocess/count), from which q, delta, the class merging and
    # the artifact's row count follow: a share of the zero-concentrated budget that (epsilon, 1e-5)
    # gives, fixed from epsilon alone (about 49 units of noise at epsilon 1, 17 at 3).
    count_share: float = 0.01
    # Relative weights of the releases that share one training step's Poisson batch (exact shares
    # of the step's 1/sigma^2): each critic step, the utility predictor, encoder+decoder, the cache.
    weight_critic: float = 1.0
    # Relative weight of the utility predictor's release in a training step (see weight_critic).
    weight_utility: float = 0.5
    # Relative weight of the encoder+decoder release in a training step (see weight_critic).
    weight_vae: float = 1.0
    # Relative weight of the cache release in a training step (see weight_critic).
    weight_cache: float = 0.5
    # Fixed effective noise multiplier of a training step instead of calibrating it to train.epochs:
    # training then stops cleanly when the next step would exceed the budget.
    noise_multiplier: float | None = None
    # Cells of the DP histograms that give quantiles (continuous columns, wide integer ranges).
    histogram_bins: int = 64
    # "flat": one clip norm over a network's whole per-example gradient. "per_layer": a threshold
    # per tensor that tracks clip_quantile of that tensor's per-example norms, estimated from noisy
    # counts inside each step's budget (docs/concepts/accounting.md section 7). Local fits only.
    clipping: Literal["flat", "per_layer"] = "flat"
    # Per-layer clipping: the quantile of per-example norms each tensor's threshold tracks.
    clip_quantile: float = 0.5
    # Per-layer clipping: the geometric learning rate of each threshold.
    clip_learning_rate: float = 0.2
    # Adam divides each step by the gradient's running scale, which under DP is mostly the added
    # noise, of known variance (σ·C/E)². Above 1, each tensor's Adam step is scaled by
    # sqrt(V / (V - Φ)) (V: its mean second moment, Φ: the noise's share of it), at most this much
    # (cadasg_dist/privacy/step_scale.py). Post-processing: no budget. 1 turns it off. Measured
    # (docs/concepts/decisions.md, "Noise-aware steps"): under DP the scale sits at its cap, and 2 lifts HI at
    # ε = 1 from 0.809 to 0.894 (three seeds) and rwm5yr at ε = 8, but costs diamonds at ε = 1 and 3
    # and gains nothing at ε = 3, so it stays off by default: an option to try per table.
    max_step_scale: float = 1.0
    # A categorical target's class expected to hold fewer rows per context than this many sds of its
    # released count shares a model stratum with its neighbour (0: never). On rwm5yr at epsilon 3 it
    # lifts the utility ratio from 0.928 to 0.940 over 12 fits (docs/concepts/decisions.md).
    merge_class_sds: float = 2.0

    def __post_init__(self) -> None:
        parts = (self.preprocessing_share, self.final_cache_share, self.class_marginals_share,
                 self.context_marginals_share)
        checks = [
            (self.max_rows_per_unit >= 1, f"privacy.max_rows_per_unit must be >= 1, got {self.max_rows_per_unit}"),
            (0 < self.count_share < 1, f"privacy.count_share must be in (0, 1), got {self.count_share}"),
            (all(0 < x < 1 for x in parts) and sum(parts) < 1,
             "privacy.preprocessing_share, final_cache_share, class_marginals_share and context_marginals_share "
             f"must be in (0, 1) with a sum below 1, got {', '.join(f'{x:g}' for x in parts)}"),
            (self.weight_critic > 0 and self.weight_vae > 0 and self.weight_cache > 0 and self.weight_utility > 0,
             "privacy.weight_critic, weight_utility, weight_vae and weight_cache must be > 0"),
            (self.noise_multiplier is None or self.noise_multiplier > 0,
             f"privacy.noise_multiplier must be > 0 (or null to calibrate it), got {self.noise_multiplier}"),
            (self.histogram_bins >= 2, f"privacy.histogram_bins must be >= 2, got {self.histogram_bins}"),
            (self.unreleased_bounds in ("error", "drop"),
             f"privacy.unreleased_bounds must be 'error' or 'drop', got {self.unreleased_bounds!r}"),
            (self.clipping in ("flat", "per_layer"),
             f"privacy.clipping must be 'flat' or 'per_layer', got {self.clipping!r}"),
            (self.max_step_scale >= 1, f"privacy.max_step_scale must be >= 1 (1 = off), got {self.max_step_scale}"),
            (0 < self.clip_quantile < 1 and self.clip_learning_rate > 0,
             "privacy.clip_quantile must be in (0, 1) and privacy.clip_learning_rate > 0, got "
             f"{self.clip_quantile} and {self.clip_learning_rate}"),
        ]
        require(checks)


@dataclass(frozen=True)
class DistributedConfig:
    """Ray Train settings (``cadasg train --num-workers N``); see cadasg_dist/distributed/."""

    # Ray Train workers; each trains a shard of the contexts.
    num_workers: int = 1
    # Give each Ray Train worker a GPU.
    use_gpu: bool = False
    # "auto" joins a running cluster, "ray://HOST:PORT" a remote one; None starts a local Ray.
    address: str | None = None
    # Workers merge their context caches (noisy all-reduce of sufficient statistics) every K steps.
    merge_every: int = 10
    # Worker-group restarts from the last checkpoint before the run fails (-1 = unlimited).
    max_failures: int = 1
    # Where Ray Train keeps checkpoints (shared storage on a multi-node cluster); None = ~/ray_results.
    storage_path: str | None = None

