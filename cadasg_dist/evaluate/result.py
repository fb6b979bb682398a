"""The typed result of ``evaluate`` and its JSON form (the keys are documented in docs/guides/evaluation.md).

Privacy: a result holds statistics of the real rows (frequencies, per-context scores, distances to
real records). It is NOT privacy-protected: keep it with the data owner, do not publish it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cadasg_dist.evaluate.fidelity import ColumnScore, PairScore

FORMAT = "cadasg-evaluation/1"  # bump when a key of to_dict() changes meaning


@dataclass(frozen=True)
class FidelityResult:
    """Overall fidelity. Scores are in [0, 1], 1 = indistinguishable on that statistic."""

    column_shape: float  # mean of the per-column scores
    pair_trend: float | None  # mean pair score; None with a single column
    score: float  # mean of column_shape and pair_trend
    columns: dict[str, float]  # per-column score (1 - KS or 1 - TV)
    column_details: tuple[ColumnScore, ...]
    wasserstein: dict[str, float]  # numeric columns, in units of the real column's std
    missing_rates: dict[str, dict[str, float]]  # column -> {"real": share, "synthetic": share}
    pairs: tuple[PairScore, ...]
    pairs_sampled: bool
    cov_frobenius: float  # ||cov(real) - cov(synthetic)||_F on encoded features
    cov_frobenius_relative: float  # the same over ||cov(real)||_F
    mmd: float  # unbiased MMD^2, RBF kernel, median-heuristic bandwidth
    precision: float  # improved precision (k-NN manifolds), 1 = every synthetic row is realistic
    recall: float  # improved recall, 1 = the synthetic rows cover the real distribution


@dataclass(frozen=True)
class ContextRow:
    key: dict[str, str]  # context column -> value label
    n_real: int
    n_synthetic: int
    column_shape: float | None
    pair_trend: float | None
    score: float | None  # mean of column_shape and pair_trend; 0 when synthetic has no such rows
    small: bool  # fewer real rows than the reporting threshold: noisy, kept out of ``min``
    note: str = ""


@dataclass(frozen=True)
class ContextFidelity:
    """Per-context fidelity, rows sorted worst first; iterate it like a list of ``ContextRow``."""

    columns: tuple[str, ...]
    rows: tuple[ContextRow, ...]
    min: float | None  # worst score over contexts that are not ``small``
    weighted_mean: float | None  # mean score weighted by real (holdout) row count
    min_rows: int  # the ``small`` threshold

    def __iter__(self) -> Iterator[ContextRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> ContextRow:
        return self.rows[i]


@dataclass(frozen=True)
class TargetRate:
    label: str
    real: float
    synthetic: float
    relative_error: float | None  # |synthetic - real| / real; None when the class is absent in real


@dataclass(frozen=True)
class ContextUtility:
    key: dict[str, str]
    n_test: int
    real: float | None
    synthetic: float | None
    ratio: float | None


@dataclass(frozen=True)
class UtilityResult:
    """Train-on-synthetic vs train-on-real, both tested on the real holdout."""

    task: str  # "classification" | "regression"
    metric: str  # "roc_auc" | "roc_auc_ovr_macro" | "r2"
    real: float | None
    synthetic: float | None
    ratio: float | None  # synthetic / real (see docs/guides/evaluation.md for the guards)
    secondary: dict[str, dict[str, float | None]]  # e.g. {"macro_f1": {"real": .., "synthetic": ..}}
    per_context: tuple[ContextUtility, ...]
    n_fit: int  # rows each model was trained on (equal for both)
    n_test: int
    baseline: str  # "train" or "holdout split" (when no train table was given)
    min_context_rows: int


@dataclass(frozen=True)
class PrivacyResult:
    """Empirical privacy checks against the training rows, plus the model's (epsilon, delta)."""

    exact_match_rate: float | None  # share of synthetic rows identical to a train row
    dcr_share: float | None  # share of synthetic rows closer to train than to holdout (0.5 ideal)
    mia_auc: float | None  # distance-based membership inference AUC (0.5 ideal)
    epsilon: float | None  # None: not reported; inf: not private
    delta: float | None
    # share of real holdout rows identical to a train row: what rows that were never copied score
    # (tables of a few coarse columns repeat rows honestly)
    exact_match_baseline: float | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationResult:
    """Everything ``evaluate`` measured. NOT privacy-protected: for the data owner, not for release."""

    fidelity: FidelityResult
    per_context: ContextFidelity
    context_frequency_tv: float | None
    target_rates: tuple[TargetRate, ...] | None
    utility: UtilityResult | None
    privacy: PrivacyResult
    subsampled: dict[str, str]  # metric -> how it was subsampled
    elapsed_s: float
    n_real: int
    n_synthetic: int
    n_train: int | None
    target: str | None
    context: tuple[str, ...]
    column_kinds: dict[str, str]
    seed: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: NaN becomes null, infinities the strings "inf" / "-inf"."""
        body = to_jsonable(self)
        return {"format": FORMAT, **body}


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, dicts, sequences and numpy scalars to plain JSON values (no NaN, no inf)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj
