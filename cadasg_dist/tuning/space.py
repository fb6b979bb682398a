"""The search space of ``cadasg tune``: a YAML file in configs/tune/, validated, to Tune domains.

    space:                                  # dotted CADASGConfig keys
      loss.cov: {loguniform: [0.25, 4.0]}
      loss.adaptive: {choice: [true, false]}
      model.latent_dim: {choice: [16, 32, 64]}
      train.epochs: {randint: [20, 60]}     # both ends included
      privacy.epsilon: {choice: [1.0, 3.0, 8.0]}
      train.batch_size: 500                 # a plain value: fixed for every trial
    search:                                 # SearchSettings; every key optional
      sampler: nsga2
      rounds: 3

Every key must be a ``CADASGConfig`` key and every value it can take must build a valid config;
all problems are reported at once. Choice options must be scalars (write a tuple like
``model.hidden`` as the string "128,128"). Which keys apply depends on the run (``for_run``):
without a privacy budget the ``privacy.*`` keys are dropped; with one, ``privacy.epsilon`` values
above the cap are dropped and the cap itself is searched too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cadasg_dist.config import CADASGConfig, read_yaml
from cadasg_dist.errors import ConfigError

DEFAULT_SPACE = Path(__file__).resolve().parents[2] / "configs" / "tune" / "default.yaml"
KINDS = ("choice", "uniform", "loguniform", "randint")
EPSILON = "privacy.epsilon"


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` is choice | uniform | loguniform | randint (ends included)."""

    key: str
    kind: str
    values: tuple[Any, ...]  # the options, or (low, high)

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        low, high = self.values
        if self.kind == "randint":
            return tune.randint(int(low), int(high) + 1)  # Tune's upper end is exclusive
        return tune.loguniform(low, high) if self.kind == "loguniform" else tune.uniform(low, high)

    def to_dict(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class SearchSettings:
    """How the search runs. Privacy caveat: the validation rows are read without any noise."""

    sampler: Literal["nsga2", "tpe"] = "nsga2"
    # Scores per trial: the epochs are cut into this many rounds, each ending in a validation score
    # (the rungs of ASHA), private trials included.
    rounds: int = 3
    grace_rounds: int = 1  # ASHA stops nothing before this round
    reduction_factor: int = 2  # ASHA keeps the best 1/reduction_factor of the trials at each rung
    # ASHA ranks trials on score = (fidelity + min(utility, 1)) / 2 - privacy_weight * ln(epsilon):
    # without the privacy term it would stop the low-epsilon trials first, and the front would
    # lose its private end.
    privacy_weight: float = 0.05
    # Share of the rows held out for tuning; the final model never trains on them.
    tune_fraction: float = 0.3
    # Share of the tuning rows that score the trials (the rest train them).
    validation_fraction: float = 0.3
    cpus_per_trial: float = 1.0
    max_concurrent_trials: int | None = None  # None: as many as the CPUs hold

    def __post_init__(self) -> None:
        checks = [
            (self.sampler in ("nsga2", "tpe"), f"search.sampler must be nsga2 or tpe, got {self.sampler!r}"),
            (self.rounds >= 1, f"search.rounds must be >= 1, got {self.rounds}"),
            (1 <= self.grace_rounds <= self.rounds,
             f"search.grace_rounds must be in [1, rounds={self.rounds}], got {self.grace_rounds}"),
            (self.reduction_factor >= 2, f"search.reduction_factor must be >= 2, got {self.reduction_factor}"),
            (self.privacy_weight >= 0, f"search.privacy_weight must be >= 0, got {self.privacy_weight}"),
            (0 < self.tune_fraction < 1, f"search.tune_fraction must be in (0, 1), got {self.tune_fraction}"),
            (0 < self.validation_fraction < 1,
             f"search.validation_fraction must be in (0, 1), got {self.validation_fraction}"),
            (self.cpus_per_trial > 0, f"search.cpus_per_trial must be > 0, got {self.cpus_per_trial}"),
            (self.max_concurrent_trials is None or self.max_concurrent_trials >= 1,
             f"search.max_concurrent_trials must be >= 1 (or null), got {self.max_concurrent_trials}"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class SearchSpace:
    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # plain values: the same for every trial
    settings: SearchSettings = field(default_factory=SearchSettings)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        raw = read_yaml(path, "search space file")
        return cls.from_dict(raw, where=str(Path(path)))

    @classmethod
    def from_dict(cls, raw: Any, where: str = "search space") -> SearchSpace:
        if not isinstance(raw, dict) or set(raw) - {"space", "search"}:
            raise ConfigError(f"{where} must be a mapping with the keys 'space' and 'search'")
        settings = _settings(raw.get("search") or {}, where)
        entries = raw.get("space") or {}
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{where}: 'space' must map config keys to distributions")
        params, fixed, problems = {}, {}, []
        for key, spec in entries.items():
            try:
                if isinstance(spec, dict):
                    params[key] = _param(str(key), spec)
                else:
                    _check_values(str(key), [spec])
                    fixed[str(key)] = spec
            except ConfigError as err:
                problems.append(str(err))
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))
        return cls(params, fixed, settings)

    def to_dict(self) -> dict[str, Any]:
        return {"space": {**{k: p.to_dict() for k, p in self.params.items()}, **self.fixed},
                "search": dataclasses.asdict(self.settings)}

    def to_tune(self) -> dict[str, Any]:
        """Tune's ``param_space``: ``{"params": {dotted key: domain}}`` (fixed values are in the base config)."""
        return {"params": {k: p.to_tune() for k, p in self.params.items()}}

    def for_run(self, *, epsilon_cap: float | None, pinned: set[str] = frozenset()) -> SearchSpace:
        """The space of one run: ``pinned`` keys (set on the command line) leave the search; without
        a privacy budget (``epsilon_cap`` None) the ``privacy.*`` keys leave it; with one, epsilon
        is searched among the space's values up to the cap, and the cap."""
        params = {k: p for k, p in self.params.items() if k not in pinned}
        fixed = {k: v for k, v in self.fixed.items() if k not in pinned}
        if epsilon_cap is None:
            params = {k: p for k, p in params.items() if not k.startswith("privacy.")}
            fixed = {k: v for k, v in fixed.items() if not k.startswith("privacy.")}
        else:
            fixed.pop(EPSILON, None)
            params[EPSILON] = _capped_epsilon(params.get(EPSILON), epsilon_cap)
            if len(params[EPSILON].values) == 1:  # a single value is not searched
                fixed[EPSILON] = params.pop(EPSILON).values[0]
        return SearchSpace(params, fixed, self.settings)


def _settings(raw: Any, where: str) -> SearchSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'search' must be a mapping")
    known = {f.name for f in dataclasses.fields(SearchSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown search setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    try:
        return SearchSettings(**raw)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def _param(key: str, spec: dict[str, Any]) -> Param:
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{key}: write one of {{{' | '.join(f'{k}: [...]' for k in KINDS)}}}, got {spec!r}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{key}: {kind} needs a non-empty list, got {values!r}")
    if kind == "choice":
        bad = [v for v in values if v is not None and not isinstance(v, bool | int | float | str)]
        if bad:
            raise ConfigError(f"{key}: choice options must be scalars, got {bad[0]!r} "
                              "(write a tuple as a string, e.g. \"128,128\")")
        _check_values(key, values)
        return Param(key, kind, tuple(values))
    if len(values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{key}: {kind} needs [low, high] numbers, got {values!r}")
    low, high = values
    if not low < high:
        raise ConfigError(f"{key}: {kind} needs low < high, got {values!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{key}: loguniform needs low > 0, got {low}")
    if kind == "randint" and not all(float(v).is_integer() for v in values):
        raise ConfigError(f"{key}: randint needs integer ends, got {values!r}")
    inside = math.sqrt(low * high) if kind == "loguniform" else (low + high) / 2
    _check_values(key, [low, high] if kind == "randint" else [low, high, inside])
    return Param(key, kind, (low, high))


def _check_values(key: str, values: list[Any]) -> None:
    """Every value must build a valid config (right key, type and range)."""
    for value in values:
        try:
            CADASGConfig().replace(**{key: value})
        except ConfigError as err:
            raise ConfigError(f"{key} = {value!r}: {err}") from None


def _capped_epsilon(param: Param | None, cap: float) -> Param:
    if param is None:
        return Param(EPSILON, "choice", (cap,))
    if param.kind == "choice":
        kept = sorted({float(v) for v in param.values if v is not None and float(v) <= cap} | {cap})
        return Param(EPSILON, "choice", tuple(kept))
    low, high = param.values
    if low >= cap:
        return Param(EPSILON, "choice", (cap,))
    return Param(EPSILON, param.kind, (low, min(high, cap)))
