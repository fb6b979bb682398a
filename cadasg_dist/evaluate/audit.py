"""Attacks on a trained model and on its training algorithm, from real training and holdout rows.

Privacy caveats first: every audit here reads real rows one by one (the training rows, a holdout,
canaries drawn from it) and its result describes them: it is for the data owner, never for release.
An audit bounds nothing: its ε is a *lower* bound that a stronger attack may raise, and an attack
AUC near 0.5 is no proof of privacy. Only the ledger's (ε, δ) is a guarantee; an audit that beats it
proves a bug. The holdout must be rows the model never saw, split by the privacy unit when there is
one (a person's other rows in the holdout would count as non-members).

* :func:`distance_attack` needs only the model's samples: members (training rows) against
  non-members (holdout rows), each scored by minus its distance to the closest synthetic row.
* :func:`canary_audit` audits the *algorithm*: it refits the given config on the training rows plus
  canaries (holdout rows each included with probability 1/2) and turns the distance attack's
  guesses into an ε lower bound (the one-run audit of :mod:`cadasg_dist.privacy.audit`).
* :func:`shadow_audit` refits the config on the attacker's population sample to learn what a
  member's neighbourhood looks like, then attacks the released synthetic table.
* :func:`audit_model` runs them on a saved model directory; the refits use the model's own config.

All distances are in an auditor's encoding fitted on the holdout (never on training rows, never
saved): :func:`auditor_encoder`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cadasg_dist.config import CADASGConfig
from cadasg_dist.data.schema import infer_schema
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.evaluate.evaluation import EVAL_THREADS
from cadasg_dist.evaluate.features import encode, fit_encoder, widened_schema
from cadasg_dist.evaluate.prepare import NUMERIC_KINDS
from cadasg_dist.evaluate.privacy_metrics import dcr_share, mia_auc
from cadasg_dist.evaluate.result import to_jsonable
from cadasg_dist.privacy.audit import (
    AuditResult,
    ShadowAttack,
    make_canaries,
    nearest_distance,
    one_run_audit,
    shadow_attack,
)
from cadasg_dist.synthesizer import CADASG

CANARIES = 200
SHADOWS = 3
SHADOW_ROWS = 2000
# Offsets of the canary and shadow draws from the audit's seed, which also seeds the model's
# samples: the three streams stay apart.
_CANARY_STREAM, _SHADOW_STREAM = 17, 29

Encoder = Callable[[pd.DataFrame], np.ndarray]
F = TypeVar("F", bound=Callable[..., Any])


def _few_threads(fn: F) -> F:
    """Run ``fn`` under evaluate()'s BLAS / OpenMP thread limit: the neighbour searches and the
    gradient boosting spin-wait many times slower on a busy machine otherwise (evaluation.EVAL_THREADS)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=EVAL_THREADS):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class DistanceAttack:
    """Distance attack on one synthetic table: AUC of members vs non-members, and the DCR share
    (synthetic rows closer to a training row than to a holdout row; about 0.5 without copying)."""

    auc: float
    dcr_share: float
    members: int  # members scored, and as many non-members


@dataclass(frozen=True)
class CanaryAudit:
    """One-run canary audit of a refit: the ε lower bound, the refit's ledger ε, and the same attack
    against a "generator" that releases its training rows (the audit's power on these canaries)."""

    result: AuditResult
    epsilon_claimed: float
    copier_epsilon_lower: float

    def to_dict(self) -> dict[str, float | int]:
        return {**self.result.to_dict(), "epsilon_claimed": self.epsilon_claimed,
                "copier_epsilon_lower": self.copier_epsilon_lower}


@dataclass(frozen=True)
class AuditReport:
    """What :func:`audit_model` found: the model's claim beside the attacks' results."""

    epsilon: float  # the ledger's; inf for a non-private model
    delta: float | None
    distance: DistanceAttack
    canary: CanaryAudit | None = None
    shadow: ShadowAttack | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (inf written as "inf")."""
        return to_jsonable({"epsilon": self.epsilon, "delta": self.delta, "distance": self.distance,
                            "canary": self.canary.to_dict() if self.canary else None, "shadow": self.shadow})


def auditor_encoder(train: pd.DataFrame, holdout: pd.DataFrame, *others: pd.DataFrame,
                    columns: Sequence[str] | None = None) -> Encoder:
    """Encode function over ``columns`` (default: all of ``train``'s), fitted on the holdout and
    widened to every category and range in the tables given."""
    cols = list(train.columns if columns is None else columns)
    frames = [f[cols] for f in (train, holdout, *others)]
    schema = widened_schema(infer_schema(frames[1]), frames)
    # A refit's samples, met only after the encoder is fitted, may hold a missing category (a DP
    # release can keep a missing slot): an extra one-hot slot, zero on every present value, so it
    # moves no distance between complete rows. Numeric columns encode a gap as their fill value.
    schema = dataclasses.replace(schema, columns=tuple(
        dataclasses.replace(c, has_missing=True) if c.kind not in NUMERIC_KINDS else c for c in schema.columns))
    enc = fit_encoder(schema, frames[1])
    return lambda df: encode(enc, df[cols])


@_few_threads
def distance_attack(synthetic: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame, *,
                    columns: Sequence[str] | None = None, seed: int = 0) -> DistanceAttack:
    """Distance attack of training rows vs holdout rows against ``synthetic`` (at most 5,000 a side)."""
    enc = auditor_encoder(train, holdout, synthetic, columns=columns)
    x_train, x_hold, x_syn = enc(train), enc(holdout), enc(synthetic)
    rng = np.random.default_rng(seed)
    share, _ = dcr_share(x_train, x_hold, x_syn, rng)
    auc, m = mia_auc(x_train, x_hold, x_syn, rng)
    return DistanceAttack(auc=auc, dcr_share=share, members=m)


@_few_threads
def canary_audit(config: CADASGConfig, train: pd.DataFrame, holdout: pd.DataFrame, *, canaries: int = CANARIES,
                 seed: int = 0, delta: float | None = None, columns: Sequence[str] | None = None) -> CanaryAudit:
    """Refit ``config`` on ``train`` plus canaries and bound its ε from below (95% confidence).

    The canaries are ``canaries`` of the holdout's least typical rows, each added to the training
    rows with probability 1/2; the refit samples as many rows as it trained on (seed ``seed``).
    ``delta``: the δ the bound is stated at (default: the refit's ledger δ, 0 when not private).
    """
    rng = np.random.default_rng(seed + _CANARY_STREAM)
    enc = auditor_encoder(train, holdout, columns=columns)
    picked = holdout.iloc[make_canaries(enc(holdout), canaries, rng)]
    included = rng.random(canaries) < 0.5
    audited = pd.concat([train, picked[included]], ignore_index=True)
    model = CADASG(config).fit(audited)
    synthetic = model.sample(len(audited), seed=seed)
    if delta is None:
        delta = (model.ledger.delta or 0.0) if model.ledger.private else 0.0
    enc = auditor_encoder(audited, holdout, synthetic, columns=columns)
    x_canaries = enc(picked)
    result = one_run_audit(-nearest_distance(enc(synthetic), x_canaries)[:, 0], included, delta=delta)
    copied = one_run_audit(-nearest_distance(enc(audited), x_canaries)[:, 0], included, delta=delta)
    return CanaryAudit(result=result, epsilon_claimed=model.epsilon, copier_epsilon_lower=copied.epsilon_lower)


@_few_threads
def shadow_audit(config: CADASGConfig, train: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame, *,
                 shadows: int = SHADOWS, shadow_rows: int = SHADOW_ROWS, seed: int = 0,
                 columns: Sequence[str] | None = None) -> ShadowAttack:
    """Shadow-model attack on ``synthetic``, released by a model that ``config`` fitted on ``train``.

    The holdout's first half is the attacker's population sample: ``shadows`` refits of ``config``
    (seeds drawn from ``seed``), each on at most ``shadow_rows`` of its rows, train the membership
    classifier. It is scored on up to 1,000 training rows vs the holdout's second half.
    """
    rng = np.random.default_rng(seed + _SHADOW_STREAM)
    half = len(holdout) // 2
    population, outside = holdout.iloc[:half], holdout.iloc[half:]
    enc = auditor_encoder(train, holdout, synthetic, columns=columns)

    def fit_sample(indices: np.ndarray, s: int) -> np.ndarray:
        picked = population.iloc[indices]
        model = CADASG(config.replace(**{"train.seed": s})).fit(picked)
        return enc(model.sample(len(picked), seed=s))

    pop = enc(population)
    return shadow_attack(fit_sample, population=pop, target_synthetic=enc(synthetic),
                         members=enc(train.sample(frac=1.0, random_state=seed)), non_members=enc(outside),
                         shadows=shadows, shadow_rows=min(shadow_rows, len(pop) // 3), rng=rng)


def audit_model(model: CADASG | str | Path, train: pd.DataFrame, holdout: pd.DataFrame, *, canaries: int = 0,
                shadows: int = 0, seed: int = 0) -> AuditReport:
    """Attack a trained model (or its saved directory) with its real ``train`` and ``holdout`` rows.

    The distance attack reads a synthetic table of ``len(train)`` rows (seed ``seed``) and no more.
    ``canaries`` > 0 adds the one-run canary audit and ``shadows`` > 0 the shadow-model attack with
    that many shadows: both refit the model's own saved config (its seed, epochs and ε; each refit
    takes as long as the original fit), so they audit the algorithm with this config on these rows,
    not the saved weights.
    """
    fitted = model if isinstance(model, CADASG) else CADASG.load(model)
    synthetic = fitted.sample(len(train), seed=seed)
    columns = _audited_columns(list(synthetic.columns), train, holdout)
    report = AuditReport(epsilon=fitted.epsilon, delta=fitted.ledger.delta if fitted.ledger.private else None,
                         distance=distance_attack(synthetic, train, holdout, columns=columns, seed=seed))
    if canaries:
        report = dataclasses.replace(report, canary=canary_audit(fitted.config, train, holdout, canaries=canaries,
                                                                 seed=seed, columns=columns))
    if shadows:
        report = dataclasses.replace(report, shadow=shadow_audit(fitted.config, train, holdout, synthetic,
                                                                 shadows=shadows, seed=seed, columns=columns))
    return report


def _audited_columns(generated: list[str], train: pd.DataFrame, holdout: pd.DataFrame) -> list[str]:
    """The columns the model generates, which the training and holdout tables must both hold
    (identifier columns are never generated, so they are never compared)."""
    for name, table in (("training", train), ("holdout", holdout)):
        missing = [c for c in generated if c not in table.columns]
        if missing:
            raise InvalidDataError(f"the {name} table lacks the model's column(s) {', '.join(map(str, missing))}; "
                                   f"give the table the model was trained on (or rows in its format)")
    if len(train) < 2 or len(holdout) < 2:
        raise InvalidDataError(f"need at least 2 training and 2 holdout rows, got {len(train)} and {len(holdout)}")
    return generated


def describe(report: AuditReport) -> str:
    """A few lines for the terminal."""
    claim = ("NOT PRIVATE (epsilon = inf)" if math.isinf(report.epsilon)
             else f"(ε={report.epsilon:.3f}, δ={report.delta or 0:.2e})-differentially private")
    d = report.distance
    lines = [f"ledger: {claim}",
             f"distance attack: AUC {d.auc:.3f} ({d.members} training vs {d.members} holdout rows), "
             f"DCR share {d.dcr_share:.3f}"]
    if report.canary is not None:
        r = report.canary.result
        lines.append(f"canary audit (a refit): ε lower bound {r.epsilon_lower:.3f} at {1 - r.beta:.0%} confidence "
                     f"({r.canaries} canaries, {r.correct} of {r.guesses} guesses right; refit's ledger ε "
                     f"{report.canary.epsilon_claimed:.3f}); the same attack on a copier: "
                     f"{report.canary.copier_epsilon_lower:.3f}")
    if report.shadow is not None:
        s = report.shadow
        lines.append(f"shadow-model attack ({s.shadows} refits): AUC {s.auc:.3f} on the model, "
                     f"{s.shadow_auc:.3f} on a held-out shadow")
    return "\n".join(lines)
