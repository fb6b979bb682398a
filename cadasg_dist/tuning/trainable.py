"""The Tune function trainable: one trial trains the engine on the tuning rows and scores it.

A trial reads its parameters into a typed ``CADASGConfig`` first, trains in ``rounds`` (the epochs
cut into equal parts), and after each round samples the model and scores it against the
validation rows with ``cadasg_dist.evaluate``: fidelity (mean of column-shape and pair-trend
scores), utility (train-on-synthetic / train-on-real ratio) and, when private, the ε spent. Each
score goes to ``tune.report``; the last one carries the saved model as a Tune checkpoint.

Privacy caveat first: the scores read the validation rows without noise, so choosing among
trials leaks those rows (and the trials' training rows, through which trial wins). That is why
tuning runs on rows the final model never trains on (``tuning.splits``); see docs/guides/tuning.md.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cadasg_dist.config import CADASGConfig
from cadasg_dist.errors import CADASGError
from cadasg_dist.evaluate import evaluate
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.train.fit import EpochReport
from cadasg_dist.tuning.rounds import RoundTrainer, snapshot_of

log = logging.getLogger(__name__)

MODEL_DIR = "model"  # the artifact's folder inside a trial's final checkpoint


@dataclass(frozen=True)
class TrialJob:
    """What every trial shares (put in Ray's object store once by ``tune.with_parameters``)."""

    base: CADASGConfig  # the run's config; a trial replaces the searched keys
    train: pd.DataFrame  # tuning rows the trials train on
    validation: pd.DataFrame  # tuning rows that score them
    rounds: int
    privacy_weight: float
    seed: int = 0

    def config_for(self, params: dict[str, Any]) -> CADASGConfig:
        return self.base.replace(**params) if params else self.base


def round_ends(epochs: int, rounds: int) -> list[int]:
    """The epochs after which a trial is scored: ``rounds`` nearly equal parts, the last at ``epochs``."""
    return sorted({max(1, round(epochs * r / rounds)) for r in range(1, rounds + 1)})


def scalar_score(fidelity: float, utility: float | None, epsilon: float | None, privacy_weight: float) -> float:
    """What ASHA ranks trials on: quality, minus a privacy term so low-ε trials are not stopped first."""
    quality = 0.5 * fidelity + 0.5 * min(utility if utility is not None else 0.0, 1.0)
    if epsilon is None or not math.isfinite(epsilon):
        return quality
    return quality - privacy_weight * math.log(epsilon)


def score(model: CADASG, job: TrialJob, epsilon: float | None = None) -> dict[str, Any]:
    """Validation scores of ``model``: NOT privacy-protected (they read the validation rows).

    ``epsilon`` is the budget spent so far (default: the model's ledger; None when not private)."""
    cfg = model.config
    synthetic = model.sample(len(job.train), seed=job.seed)
    columns = list(synthetic.columns)
    result = evaluate(job.validation[columns], synthetic, target=cfg.target, context=list(cfg.context.columns),
                      train=job.train[columns], seed=job.seed)
    utility = result.utility.ratio if result.utility is not None else None
    if epsilon is None and model.ledger.private:
        epsilon = model.ledger.epsilon()
    metrics = {
        "fidelity": float(result.fidelity.score),
        # Optuna cannot rank a missing value: an unmeasurable ratio counts as no utility.
        "utility": float(utility) if utility is not None else 0.0,
        "column_shape": float(result.fidelity.column_shape),
        "pair_trend": result.fidelity.pair_trend,
        "context_min": result.per_context.min,
        "score": scalar_score(result.fidelity.score, utility, epsilon, job.privacy_weight),
    }
    if epsilon is not None:
        metrics["epsilon"] = float(epsilon)
    return metrics


def run_trial(config: dict[str, Any], *, job: TrialJob) -> None:
    """Tune function trainable: ``tune.with_parameters(run_trial, job=job)``."""
    from ray import tune

    # resolved here, so that automatic epochs are cut into rounds as the fit will train them
    cfg = job.config_for(config.get("params", {})).resolved(len(job.train))
    ends = round_ends(cfg.train.epochs, job.rounds)
    try:
        train = _train_private if cfg.private else _train_local
        model = train(cfg, job, ends, tune.report)
    except CADASGError as err:  # e.g. a budget that cannot cover one step: a poor point, not a crash
        log.warning("trial infeasible: %s", err)
        tune.report(_infeasible(cfg, job, ends, err))
        return
    metrics = {**score(model, job), "round": len(ends), "epochs": len(model.history)}
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / MODEL_DIR)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


Report = Callable[[dict[str, Any]], None]


def _train_local(cfg: CADASGConfig, job: TrialJob, ends: list[int], report: Report) -> CADASG:
    trainer = RoundTrainer(CADASG(cfg), job.train)
    for i, end in enumerate(ends[:-1], start=1):
        trainer.train(end - trainer.epoch)
        report({**score(trainer.snapshot(), job), "round": i, "epochs": trainer.epoch})
    trainer.train(ends[-1] - trainer.epoch)
    return trainer.finish()


def _train_private(cfg: CADASGConfig, job: TrialJob, ends: list[int], report: Report) -> CADASG:
    """``CADASG.fit`` itself, so the privacy layer keeps sole charge of noise and accounting.

    Between rounds the trial samples the networks and the EMA cache that the progress callback
    hands out: both are DP releases, so the snapshot costs no budget, and the score (like every
    score here) reads only the tuning rows. ASHA may then stop the trial at a rung.
    """
    model = CADASG(cfg)
    scored = {end: i for i, end in enumerate(ends[:-1], start=1)}

    def on_epoch(epoch: EpochReport) -> None:
        if epoch.epoch in scored:
            view = snapshot_of(model, epoch.state.nets, epoch.cache, epoch.epoch)
            report({**score(view, job, epoch.epsilon), "round": scored[epoch.epoch], "epochs": epoch.epoch})

    return model.fit(job.train, progress=on_epoch)


def _infeasible(cfg: CADASGConfig, job: TrialJob, ends: list[int], err: Exception) -> dict[str, Any]:
    metrics: dict[str, Any] = {"fidelity": 0.0, "utility": 0.0, "score": -1.0, "round": len(ends), "epochs": 0,
                               "infeasible": str(err)}
    if cfg.private:
        metrics["epsilon"] = float(cfg.privacy.epsilon)
    return metrics
