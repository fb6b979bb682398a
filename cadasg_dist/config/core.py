"""Typed run configuration: the one source of defaults.

The CLI flags, the YAML files in ``configs/`` and the Flower run config all parse into
``CADASGConfig``; nothing else holds a default. Unknown keys are refused with the list of known
ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadasg_dist.config import profiles, sections
from cadasg_dist.config.parsing import build_dataclass, dataclass_of, read_yaml_mapping, require, to_plain
from cadasg_dist.errors import ConfigError


@dataclass(frozen=True)
class CADASGConfig:
    """A whole run: one of each section, checked across sections (``validate``) when built."""

    # The target column: its classes (or value bins) are the strata, and the utility predictor learns it.
    target: str | None = None
    data: sections.DataConfig = field(default_factory=sections.DataConfig)
    context: sections.ContextConfig = field(default_factory=sections.ContextConfig)
    model: sections.ModelConfig = field(default_factory=sections.ModelConfig)
    loss: sections.LossConfig = field(default_factory=sections.LossConfig)
    cache: sections.CacheConfig = field(default_factory=sections.CacheConfig)
    train: sections.TrainConfig = field(default_factory=sections.TrainConfig)
    privacy: sections.PrivacyConfig = field(default_factory=sections.PrivacyConfig)
    distributed: sections.DistributedConfig = field(default_factory=sections.DistributedConfig)
    # Rules every synthetic row satisfies: ranges, inequalities, fixed combinations, band ties (a list
    # of ConstraintConfig entries, keys below as constraints[].KEY; docs/guides/constraints.md).
    constraints: tuple[sections.ConstraintConfig, ...] = ()

    def __post_init__(self) -> None:
        validate(self)

    # --- conversions -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CADASGConfig:
        return build_dataclass(cls, _moved_keys(raw), "")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> CADASGConfig:
        return cls.from_dict(read_yaml_mapping(path))

    def replace(self, **dotted: Any) -> CADASGConfig:
        """A copy with dotted keys replaced, e.g. ``cfg.replace(**{"train.epochs": 5})``."""
        raw = self.to_dict()
        for key, value in dotted.items():
            node, tp = raw, CADASGConfig  # tp: the dataclass at this level; "map" inside a mapping field
            parts = key.split(".")
            for i, part in enumerate(parts):
                if tp is None:
                    raise ConfigError(f"unknown config key {key!r}")
                if tp != "map":
                    hints = typing.get_type_hints(tp)
                    if part not in hints:
                        raise ConfigError(f"unknown config key {key!r}")
                    hint = hints[part]
                    tp = "map" if typing.get_origin(hint) is dict else dataclass_of(hint)
                if i == len(parts) - 1:
                    node[part] = value
                else:
                    if not isinstance(node.get(part), dict):
                        node[part] = {}
                    node = node[part]
        return CADASGConfig.from_dict(raw)

    @property
    def private(self) -> bool:
        return math.isfinite(self.privacy.epsilon)

    @property
    def class_calibration(self) -> bool:
        """``model.calibrate_classes`` resolved: "auto" is on for a private fit at a small epsilon."""
        m = self.model
        if m.calibrate_marginals == "off" or m.calibrate_classes == "off":
            return False
        return m.calibrate_classes == "on" or (self.private and self.privacy.epsilon <= m.class_calibration_max_epsilon)

    @property
    def context_calibration(self) -> bool:
        """``model.calibrate_contexts`` resolved: "auto" is on for a private fit at a small epsilon."""
        m = self.model
        if m.calibrate_marginals == "off" or m.calibrate_contexts == "off":
            return False
        return m.calibrate_contexts == "on" or (self.private and
                                                 self.privacy.epsilon <= m.context_calibration_max_epsilon)

    def resolved(self, n_rows: int | None = None) -> CADASGConfig:
        """This config with every "auto" key (``None``: ``profiles.AUTO_KEYS``) set from the profile of
        its privacy (``profiles.PRIVATE`` when ``privacy.epsilon`` is finite, else ``NON_PRIVATE``)
        and, given the table's ``n_rows``, automatic ``train.epochs`` (0) set to ``resolved_epochs``.

        The one place where the defaults that depend on privacy are decided: every runner resolves
        its config before it reads them, and a saved model keeps the result. A value the user set is
        kept, and resolving a resolved config changes nothing.
        """
        fill = {key: value for key, value in profiles.profile(self.private).items() if _dotted(self, key) is None}
        cfg = self.replace(**fill) if fill else self
        if n_rows is not None and cfg.train.epochs == 0:
            cfg = cfg.replace(**{"train.epochs": cfg._automatic_epochs(n_rows)})
        return cfg

    def resolved_epochs(self, n_rows: int) -> int:
        """``train.epochs``, or the automatic number for a table of ``n_rows`` rows (``resolved``)."""
        return self.resolved(n_rows).train.epochs

    def _automatic_epochs(self, n_rows: int) -> int:
        t = self.train
        if self.private:  # independent of the row count (profiles.PRIVATE_EPOCHS)
            return profiles.PRIVATE_EPOCHS
        steps_per_epoch = max(1, math.ceil(n_rows / t.batch_size))
        return int(min(max(math.ceil(t.target_steps / steps_per_epoch), t.min_epochs), t.max_epochs))


def _dotted(cfg: Any, key: str) -> Any:
    """The value at dotted ``key`` ("model.latent_dim") of a config."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: CADASGConfig) -> None:
    checks = [
        (cfg.train.epochs >= 0, f"train.epochs must be >= 1 (or 0 for automatic), got {cfg.train.epochs}"),
        (1 <= cfg.train.min_epochs <= cfg.train.max_epochs,
         f"train.min_epochs must be in [1, max_epochs], got {cfg.train.min_epochs}"),
        (cfg.train.batch_size is None or cfg.train.batch_size >= 2,
         f"train.batch_size must be >= 2 (or null for automatic), got {cfg.train.batch_size}"),
        (0 <= cfg.train.weight_averaging < 1,
         f"train.weight_averaging must be in [0, 1) (0 = off), got {cfg.train.weight_averaging}"),
        (cfg.cache.ema_alpha is None or 0.9 <= cfg.cache.ema_alpha <= 0.99 or cfg.cache.ema_alpha == 1.0,
         f"cache.ema_alpha must be in [0.9, 0.99] (or 1.0 for plain sums, null for automatic), "
         f"got {cfg.cache.ema_alpha}"),
        (cfg.model.latent_dim is None or cfg.model.latent_dim >= 1,
         f"model.latent_dim must be >= 1 (or null for automatic), got {cfg.model.latent_dim}"),
        (cfg.model.target_bins >= 1, f"model.target_bins must be >= 1, got {cfg.model.target_bins}"),
        (cfg.privacy.merge_class_sds >= 0,
         f"privacy.merge_class_sds must be >= 0 (0: never merge a thin class), got {cfg.privacy.merge_class_sds}"),
        (cfg.model.class_calibration_max_epsilon > 0,
         f"model.class_calibration_max_epsilon must be > 0, got {cfg.model.class_calibration_max_epsilon}"),
        (cfg.model.context_calibration_max_epsilon > 0,
         f"model.context_calibration_max_epsilon must be > 0, got {cfg.model.context_calibration_max_epsilon}"),
        (cfg.privacy.epsilon > 0, f"privacy.epsilon must be > 0 (use inf for non-private), got {cfg.privacy.epsilon}"),
        (cfg.privacy.delta is None or 0 < cfg.privacy.delta < 1,
         f"privacy.delta must be in (0, 1), got {cfg.privacy.delta}"),
        (cfg.privacy.max_grad_norm > 0, f"privacy.max_grad_norm must be > 0, got {cfg.privacy.max_grad_norm}"),
        (cfg.distributed.num_workers >= 1, f"distributed.num_workers must be >= 1, got {cfg.distributed.num_workers}"),
        (cfg.distributed.merge_every >= 1, f"distributed.merge_every must be >= 1, got {cfg.distributed.merge_every}"),
        (cfg.privacy.clipping == "flat" or cfg.distributed.num_workers == 1,
         "privacy.clipping='per_layer' is for a local fit; Ray Train workers use flat clipping "
         "(set privacy.clipping=flat or distributed.num_workers=1)"),
        (cfg.distributed.max_failures >= -1,
         f"distributed.max_failures must be >= -1 (-1 = unlimited), got {cfg.distributed.max_failures}"),
        (cfg.data.continuous_encoding in ("quantile", "standard"),
         f"data.continuous_encoding must be 'quantile' or 'standard', got {cfg.data.continuous_encoding!r}"),
        (cfg.loss.balance_min > 0 and cfg.loss.balance_max >= cfg.loss.balance_min,
         "loss.balance_min must be > 0 and <= loss.balance_max"),
    ]
    for name in ("wgan", "kl", "cov", "utility", "gradient_penalty", "kl_beta"):
        value = getattr(cfg.loss, name)
        checks.append((value >= 0, f"loss.{name} must be >= 0, got {value}"))
    for period_col, period in cfg.context.periods.items():
        checks.append((period in ("year", "quarter", "month"),
                       f"context.periods[{period_col!r}] must be year, quarter or month, got {period!r}"))
    for band_col, edges in cfg.context.bands.items():
        ok = len(edges) >= 2 and all(a < b for a, b in zip(edges, edges[1:]))
        checks.append((ok, f"context.bands[{band_col!r}] must be >= 2 increasing edges, got {list(edges)}"))
    for i, entry in enumerate(cfg.constraints):
        problem = entry.problem()
        checks.append((problem is None, f"constraints[{i}]: {problem}"))
        checks.append((not (cfg.private and entry.kind == "combinations" and entry.allowed is None),
                       f"constraints[{i}]: a private run never reads the combinations from the table: declare them "
                       f"(allowed: [[...], ...] over {', '.join(entry.columns)})"))
    require(checks)


# Keys that moved to the section that reads them: (old section, key) -> new section. Configs and
# artifacts written with the old place still load.
MOVED_KEYS = {("model", "merge_class_sds"): "privacy"}


def _moved_keys(raw: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for (old, key), new in MOVED_KEYS.items():
        section = out.get(old)
        if isinstance(section, dict) and key in section:
            section = dict(section)
            value = section.pop(key)
            out[old] = section
            out[new] = {key: value, **(out.get(new) or {})}
    return out
