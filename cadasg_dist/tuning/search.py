"""The Tune search: OptunaSearch over the space, ASHA on a scalar score, resumable from its storage.

A sketch (it starts Ray Tune, so the docs test does not run it)::

    request = SearchRequest(base=cfg, space=space, trials=16, out=Path("runs/tune"))
    outcome = run_search(request, frame)      # a second call with the same out resumes
    outcome.front()                           # the completed trials no other trial dominates

Objectives: validation fidelity (max), validation utility (max) and, for private runs, the ε a
trial spent (min); Optuna's NSGA-II or TPE proposes the trials (multi-objective, through Tune's
``OptunaSearch``). ASHA stops trials whose scalar score (``trainable.scalar_score``) lags at a
round. ``max_concurrent_trials`` defaults to the CPUs Ray has over ``cpus_per_trial``.

Privacy: trials train and are scored on the tuning rows only (``tuning.splits``); the final model
trains on the other rows. The search result describes the tuning rows and is not protected.
Resuming: the experiment lives in ``out/ray/search``; running the same request again continues it
(finished trials are kept, interrupted ones restart) and refuses a request that differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cadasg_dist.config import CADASGConfig
from cadasg_dist.errors import ConfigError
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.tuning.front import OBJECTIVES, TrialPoint, pareto_front
from cadasg_dist.tuning.space import SearchSpace
from cadasg_dist.tuning.splits import TuningSplit, split_for_tuning
from cadasg_dist.tuning.trainable import MODEL_DIR, TrialJob, run_trial

log = logging.getLogger(__name__)

EXPERIMENT = "search"
REQUEST_FILE = "search.json"


@dataclass(frozen=True)
class SearchRequest:
    base: CADASGConfig  # target, context, declarations, privacy cap; the space's fixed values go on top
    space: SearchSpace  # already narrowed to this run (``SearchSpace.for_run``)
    trials: int
    out: Path
    seed: int = 0
    verbose: int = 0  # Tune's console output: 0 silent, 1 status tables

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}")
        if not self.space.params:
            raise ConfigError("the search space leaves nothing to search (every key is fixed or pinned)")

    @property
    def config(self) -> CADASGConfig:
        """The config every trial starts from."""
        return self.base.replace(**self.space.fixed) if self.space.fixed else self.base

    @property
    def objectives(self) -> dict[str, str]:
        names = ("fidelity", "utility", "epsilon") if self.config.private else ("fidelity", "utility")
        return {k: OBJECTIVES[k] for k in names}


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    status: str  # completed | stopped (by ASHA) | infeasible | error | unfinished (interrupted)
    params: dict[str, Any]
    metrics: dict[str, Any]
    artifact: str | None = None  # the saved model of a completed trial
    error: str | None = None

    def point(self, objectives: Sequence[str]) -> TrialPoint:
        return TrialPoint(self.trial_id, {k: self.metrics.get(k) for k in objectives})


@dataclass(frozen=True)
class SearchOutcome:
    request: SearchRequest
    records: list[TrialRecord]
    split: dict[str, int]
    wall_s: float  # this call only: a resumed search counts from the resume
    interrupted: bool
    experiment: Path
    resumed: bool = False

    @property
    def objectives(self) -> dict[str, str]:
        return self.request.objectives

    def completed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.status == "completed"]

    def front(self) -> list[TrialRecord]:
        """Completed trials that no other completed trial dominates."""
        done = self.completed()
        ids = {p.trial_id for p in pareto_front([r.point(self.objectives) for r in done], self.objectives)}
        return [r for r in done if r.trial_id in ids]

    def stopped_fraction(self) -> float:
        started = [r for r in self.records if r.status != "unfinished"]
        return sum(r.status == "stopped" for r in started) / len(started) if started else 0.0


def tuning_split(request: SearchRequest, frame: pd.DataFrame) -> TuningSplit:
    s = request.space.settings
    return split_for_tuning(frame, tune_fraction=s.tune_fraction, validation_fraction=s.validation_fraction,
                            seed=request.seed, unit=request.config.privacy.unit)


def run_search(request: SearchRequest, frame: pd.DataFrame, *, callbacks: Sequence[Any] = ()) -> SearchOutcome:
    """Run (or resume) the search over ``frame``; Ray is started here unless it already runs."""
    from ray import tune

    started = time.perf_counter()
    split = tuning_split(request, frame)
    CADASG(request.config).prepare(split.train)  # bad columns or undeclared categories: one clear error now
    experiment = request.out.resolve() / "ray" / EXPERIMENT
    resumed = _check_request(request, frame, experiment)
    init_ray(request.config.distributed.address)
    settings = request.space.settings
    job = TrialJob(base=request.config, train=split.train, validation=split.validation, rounds=settings.rounds,
                   privacy_weight=settings.privacy_weight, seed=request.seed)
    trainable = tune.with_resources(tune.with_parameters(run_trial, job=job), {"cpu": settings.cpus_per_trial})
    if resumed:
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=request.space.to_tune(),
                           tune_config=_tune_config(request), run_config=_run_config(request, experiment, callbacks))
    grid = tuner.fit()
    # A trial the saved state does not call finished was interrupted, even if it reported a round:
    # the resume restarts it. Not the trial's status in memory: after an interrupt Tune writes its
    # state first, then marks the trials it stops as TERMINATED.
    saved = saved_statuses(experiment)
    terminated = [saved.get(trial.trial_id, trial.status) in ("TERMINATED", "ERROR")
                  for trial in grid._experiment_analysis.trials]
    records = [_record(result, done) for result, done in zip(grid, terminated, strict=True)]
    interrupted = sum(terminated) < request.trials  # from the saved state too, not the counts in memory
    return SearchOutcome(request=request, records=records, split=split.sizes(), wall_s=time.perf_counter() - started,
                         interrupted=interrupted, experiment=experiment, resumed=resumed)


def saved_statuses(experiment: Path) -> dict[str, str]:
    """Each trial's status in the newest experiment state Tune wrote: what a resume starts from."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return {}
    trial_data = json.loads(states[-1].read_text())["trial_data"]
    return {state["trial_id"]: state["status"] for state in (json.loads(raw) for raw, _ in trial_data)}


def init_ray(address: str | None = None) -> bool:
    """Connect this process to Ray unless it already is; True when this call did.

    ``address`` is ``distributed.address``: "auto" joins a running cluster, "ray://HOST:PORT" a
    remote one. None starts a new local Ray: on a shared machine ``ray.init()`` alone would join
    whichever cluster someone else started.
    """
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def max_concurrent(request: SearchRequest) -> int:
    """Trials at once: the setting, or as many as Ray's CPUs hold at ``cpus_per_trial`` each."""
    import ray

    settings = request.space.settings
    if settings.max_concurrent_trials is not None:
        return min(settings.max_concurrent_trials, request.trials)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, min(request.trials, int(cpus // settings.cpus_per_trial)))


def _tune_config(request: SearchRequest) -> Any:
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    settings = request.space.settings
    if settings.sampler == "nsga2":
        # A population of at most half the trials, so a small search sees more than one generation.
        sampler = optuna.samplers.NSGAIISampler(population_size=max(4, min(50, request.trials // 2)),
                                                seed=request.seed)
    else:
        sampler = optuna.samplers.TPESampler(n_startup_trials=max(4, min(10, request.trials // 2)),
                                             seed=request.seed)
    objectives = request.objectives
    searcher = OptunaSearch(metric=list(objectives), mode=list(objectives.values()), sampler=sampler)
    scheduler = ASHAScheduler(metric="score", mode="max", time_attr="training_iteration", max_t=settings.rounds,
                              grace_period=settings.grace_rounds, reduction_factor=settings.reduction_factor)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=request.trials,
                           max_concurrent_trials=max_concurrent(request), reuse_actors=True)


def _run_config(request: SearchRequest, experiment: Path, callbacks: Sequence[Any]) -> Any:
    from ray import tune

    return tune.RunConfig(storage_path=str(experiment.parent), name=experiment.name, verbose=request.verbose,
                          failure_config=tune.FailureConfig(max_failures=0), callbacks=list(callbacks) or None)


def _fingerprint(request: SearchRequest, frame: pd.DataFrame) -> dict[str, Any]:
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    space = request.space.to_dict()
    space["search"].pop("max_concurrent_trials")  # a resume may run more or fewer at once
    config = request.base.to_dict()
    config.pop("distributed")  # where Ray runs does not change the search
    return {"data_sha256": hashlib.sha256(rows.tobytes() + ",".join(map(str, frame.columns)).encode()).hexdigest(),
            "config": config, "space": space, "trials": request.trials, "seed": request.seed}


def _check_request(request: SearchRequest, frame: pd.DataFrame, experiment: Path) -> bool:
    """True when ``experiment`` holds this very search to resume; refuses a different one."""
    from ray import tune

    path = request.out / REQUEST_FILE
    mine = json.loads(json.dumps(_fingerprint(request, frame)))
    if path.is_file() and tune.Tuner.can_restore(str(experiment)):
        saved = json.loads(path.read_text())
        if saved != mine:
            changed = sorted(k for k in mine if saved.get(k) != mine[k])
            raise ConfigError(f"{request.out} holds a different search (its {', '.join(changed)} differ); "
                              "use another --out to start a new one")
        return True
    request.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=1, sort_keys=True))
    return False


def _record(result: Any, terminated: bool = True) -> TrialRecord:
    metrics = dict(result.metrics or {})
    trial_id = str(metrics.get("trial_id") or Path(result.path).name)
    params = dict((result.config or {}).get("params", {}))
    kept = {k: v for k, v in metrics.items() if k in (*OBJECTIVES, "score", "column_shape", "pair_trend",
                                                     "context_min", "round", "epochs", "infeasible",
                                                     "training_iteration")}
    if not terminated:
        status, error = "unfinished", None
    elif result.error is not None:
        status, error = "error", f"{type(result.error).__name__}: {result.error}"[:500]
    elif "infeasible" in metrics:
        status, error = "infeasible", str(metrics["infeasible"])
    elif result.checkpoint is not None:
        status, error = "completed", None
    elif "round" in metrics:
        status, error = "stopped", None
    else:
        status, error = "unfinished", None
    artifact = str(Path(result.checkpoint.path) / MODEL_DIR) if status == "completed" else None
    return TrialRecord(trial_id, status, params, kept, artifact, error)
