"""The driver: plan the shards, run a ``TorchTrainer``, and turn its final checkpoint into a model.

A sketch (it starts Ray Train, so the docs test does not run it)::

    model = fit_distributed(CADASG(cfg), "data/parts/", context=["region"], target="y")

``cfg.distributed`` says how many workers, whether each gets a GPU, which cluster to join
(``address``), how often caches merge, how many worker-group failures to recover from and where
checkpoints go. The driver reads a bounded sample of the table to fit the schema, contexts and
transforms (the same code as ``CADASG.prepare``; all of a table up to ``PREPARE_ROWS`` rows), counts
rows per context in one Ray Data pass, makes the ``ShardPlan`` and logs it, and hands Ray Train the
lazy dataset with a ``ContextRouting`` data config. It never holds more than the sample.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.distributed.data import PREPARE_ROWS, ContextRouting, context_counts, open_table, preparation_sample
from cadasg_dist.distributed.journal import lost_steps, start_journal
from cadasg_dist.distributed.plan import ShardPlan, make_plan
from cadasg_dist.distributed.preflight import check_before_ray
from cadasg_dist.distributed.worker import WorkerConfig, load_payload, quiet_console, train_loop_per_worker
from cadasg_dist.errors import ConfigError
from cadasg_dist.model.networks import CADASGNetworks, ModelDims
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.synthesizer import CADASG, fit_config
from cadasg_dist.train.fit import EpochReport, ProgressFn
from cadasg_dist.train.loop import new_cache

log = logging.getLogger(__name__)

# How often Ray Train's controller polls the workers (Ray's default: 2 s). It takes one queued
# report per worker and poll, so with epochs shorter than the interval the reports back up and the
# final one waits for the backlog. Ray passes this variable from the driver to its controller; a
# value the user set wins.
POLL_ENV, POLL_INTERVAL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25"


def fit_distributed(model: CADASG, data: str | Path | pd.DataFrame, *, context: list[str] | None = None,
                    target: str | None = None, progress: ProgressFn | None = None, local_mode: bool = False,
                    prepare_rows: int = PREPARE_ROWS, on_plan: Callable[[str], None] | None = None,
                    trace_dir: str | None = None) -> CADASG:
    """Train ``model`` with Ray Train on ``model.config.distributed.num_workers`` workers; returns it.

    ``local_mode`` runs the train function in this process (``ScalingConfig(num_workers=0)``), for
    tests of the loop. ``on_plan`` gets the shard plan as text (the CLI prints it; it is also logged
    and, for a non-private run, kept in ``model.meta["distributed"]``). ``progress`` gets the
    epochs' reports after the run (Ray keeps the live ones in its logs). ``trace_dir`` is a test
    hook: each worker writes its PID and the steps it begins there (``worker.StepTrace``), so a test
    can kill one from outside mid-epoch.

    A private run on Ray Train keeps a spend journal (``journal``): the steps a failed worker group
    began after its last checkpoint are counted once when it resumes, and the run refuses to return
    a model whose ledger lacks a step the journal holds.
    """
    start = time.perf_counter()
    cfg = model.config = fit_config(model.config, context, target)
    check_before_ray(cfg, data, max_private_rows=prepare_rows)  # config, columns, declarations: before Ray
    ensure_ray(cfg.distributed.address)
    quiet_console()
    ds = open_table(data)
    sample, total = preparation_sample(ds, prepare_rows, seed=cfg.train.seed)
    if cfg.private and len(sample) < total:
        raise ConfigError(f"private distributed training releases its preprocessing statistics from the whole "
                          f"table in the driver, which reads at most {prepare_rows} rows; this table has more")
    # the profile's defaults; automatic epochs count the whole table, not the driver's sample
    model.config = cfg = cfg.resolved(total)
    prepared = model.prepare(sample)
    cfg, ids, dims = model.config, prepared.ids, prepared.dims
    ledger = budget = None
    if cfg.private:  # the workers train on the rows as the DP preprocessing conformed them, under its plan
        import ray.data

        prep = prepared.private
        ds, ledger, budget = ray.data.from_pandas(prep.frame), prep.ledger.state_dict(), prep.plan.to_dict()
    plan, text = shard_plan(model, ids, ds if len(sample) < total and not cfg.private else None,
                            1 if local_mode else cfg.distributed.num_workers)
    if cfg.private:
        total = int(prepared.private.plan.n_rows)  # the released count: the exact one stays in the run
    log.info("%s", text)
    if on_plan is not None:
        on_plan(text)
    wc = WorkerConfig(cfg, model.schema, model.transformer.to_dict(), model.extractor.to_dict(), dims, plan, total,
                      ledger=ledger, budget=budget, trace_dir=trace_dir)
    planned = time.perf_counter()
    payload = train_on_ray(wc, ds, local_mode)
    trained = time.perf_counter()
    finish_model(model, payload, dims, time.perf_counter() - start, total, plan)
    model.meta["distributed"]["timing"].update(driver_prepare_s=planned - start, trainer_fit_s=trained - planned)
    if progress is not None:
        for h in model.history:
            eps = model.epsilon if cfg.private and h is model.history[-1] else None
            progress(EpochReport(int(h["epoch"]), cfg.train.epochs, model.meta["fit_seconds"], h, eps))
    return model


def train_on_ray(wc: WorkerConfig, ds: Any, local_mode: bool) -> dict[str, Any]:
    """Run the trainer (with a spend journal when the run is private and on Ray Train workers) and
    return the final checkpoint's payload, checked against the journal."""
    import ray
    from ray.train import TrainingFailedError

    journal = start_journal() if wc.cfg.private and not local_mode else None
    try:
        try:
            result = make_trainer(dataclasses.replace(wc, journal=journal and journal[0]), ds, local_mode).fit()
        finally:
            spent = None if journal is None else ray.get(journal[1].state.remote())
    except TrainingFailedError as exc:
        raise DistributedRunError(failure_message(wc, exc, spent)) from exc
    finally:
        if journal is not None:
            ray.kill(journal[1])
    if result.checkpoint is None:
        raise RuntimeError("the distributed run ended without a checkpoint; see the Ray Train logs")
    with result.checkpoint.as_directory() as d:
        payload = load_payload(Path(d))
    if spent is not None:
        check_spent(spent, payload["privacy"])
    return payload


class DistributedRunError(RuntimeError):
    """Ray Train gave up: more worker-group failures than ``distributed.max_failures``, or no room
    for the workers (a lost node not replaced) through as many start-up timeouts."""


def failure_message(wc: WorkerConfig, exc: Exception, spent: dict[str, Any] | None) -> str:
    """One paragraph: what failed, what the cluster has now against what the workers need, what to
    do, and (private) what was spent. Ray's own error is named by its last line only."""
    import ray

    d = wc.cfg.distributed
    cause = str(getattr(exc, "controller_failure", exc)).strip().splitlines()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    unit = "GPU" if d.use_gpu else "CPU"
    have = float(ray.cluster_resources().get(unit, 0.0))
    fits = int(have)  # each worker asks for one CPU (or one GPU)
    text = (f"distributed training stopped after the {d.max_failures} restart(s) distributed.max_failures allows "
            f"({type(exc).__name__}: {cause[-1] if cause else 'no detail'}). The cluster now has {have:g} {unit}(s) "
            f"on {nodes} live node(s) for {d.num_workers} workers needing one {unit} each")
    if fits >= d.num_workers:
        text += ": see the Ray Train logs for the failing worker."
    else:
        text += ": add a node" + (f", or rerun with --num-workers {fits} (distributed.num_workers)." if fits else ".")
    if spent is not None and spent["begun"]:
        text += (f" The {spent['begun']} DP step(s) the workers began are spent: a rerun on this table spends a "
                 "new budget on top of them.")
    return text + " No model was returned."


def check_spent(journal: dict[str, Any], privacy: dict[str, Any]) -> None:
    """Refuse a model whose ledger lacks a DP step (or the final cache pass) that a worker began:
    its ε would be under-reported."""
    counted = int(privacy["steps_taken"])
    if lost_steps(journal, counted) or (journal["final"] and not privacy["final_released"]):
        raise RuntimeError(f"the workers began {journal['begun']} DP steps but the final ledger counts {counted} "
                           "(or lacks the final cache pass): the model is not returned, its epsilon would be "
                           "under-reported; see the Ray Train logs")


def shard_plan(model: CADASG, ids: np.ndarray, ds: Any, workers: int) -> tuple[ShardPlan, str]:
    """The shard plan over the prepared contexts (counted from ``ids``, or from ``ds`` when the driver
    read a sample only) and its text for the run's output.

    The plan places rows on workers by their exact context counts. In a private run it stays inside
    the run (the union of the shards is the table, so the releases do not depend on it): only its
    shape is shown or kept."""
    cfg, n_contexts = model.config, model.extractor.n_contexts
    counts = np.bincount(ids, minlength=n_contexts) if ds is None else context_counts(
        ds, model.schema, model.extractor.to_dict())
    plan = make_plan(counts, workers)
    check_plan(plan, cfg.train.batch_size, private=cfg.private)
    if cfg.private:
        return plan, plan.describe_shape()
    labels = [", ".join(f"{k}={v}" for k, v in model.extractor.describe(c).items()) for c in range(n_contexts)]
    return plan, plan.describe(labels)


def ensure_ray(address: str | None) -> None:
    """Join ``address`` ("auto", "ray://HOST:PORT") or start this process's own local Ray (None:
    ``$RAY_ADDRESS`` if set; a plain ``ray.init()`` would join whatever cluster ``ray start`` left on
    the machine), unless one is running."""
    import os

    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"address": address, "configure_logging": False}
    if address is not None and address.startswith("ray://"):
        from cadasg_dist._version import PACKAGE_DIR

        # A Ray client's cluster cannot see this machine's files: ship the package with the job.
        kwargs["runtime_env"] = {"py_modules": [str(PACKAGE_DIR)]}
    ray.init(**kwargs)


def check_plan(plan: ShardPlan, batch_size: int, *, private: bool = False) -> None:
    """Every worker must have at least two rows for each step of an epoch (a private run's message
    names no count: the loads are exact)."""
    steps = math.ceil(plan.total / batch_size)
    smallest = min(plan.loads)
    if smallest < 2 * steps and private:
        raise ConfigError(f"with {plan.num_workers} workers a worker gets too few rows for the steps of an epoch; "
                          f"use fewer workers or a larger train.batch_size (now {batch_size})")
    if smallest < 2 * steps:
        raise ConfigError(f"with {plan.num_workers} workers a worker gets {smallest} rows for {steps} steps per epoch; "
                          f"use fewer workers or a larger train.batch_size (now {batch_size})")


def make_trainer(wc: WorkerConfig, ds: Any, local_mode: bool) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    d = wc.cfg.distributed
    os.environ.setdefault(POLL_ENV, POLL_INTERVAL_S)
    storage = d.storage_path
    if storage is not None and "://" not in storage:  # a local or shared (NFS) path; URIs go as they are
        storage = str(Path(storage).expanduser().resolve())
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=wc.to_dict(),
        # gloo on both: the cache's float64 sums and the balancer's norms stay on the CPU, and gloo
        # all-reduces CUDA tensors too (the gradients of GPU workers).
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=0 if local_mode else d.num_workers, use_gpu=d.use_gpu),
        run_config=RunConfig(name=f"cadasg-{time.strftime('%Y%m%d-%H%M%S')}-{np.random.randint(1 << 30):08x}",
                             storage_path=storage,
                             # A group that cannot start (a lost node not replaced) waits Ray's start-up
                             # timeout (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s) per try, as many tries
                             # as worker failures: bounded (Ray's default retries it forever).
                             failure_config=FailureConfig(max_failures=d.max_failures,
                                                          controller_failure_limit=d.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={"train": ds},
        dataset_config=ContextRouting(wc.plan, wc.schema, wc.context),
    )


def finish_model(model: CADASG, payload: dict[str, Any], dims: ModelDims, seconds: float, rows: int,
                 plan: ShardPlan) -> None:
    """Set the trained networks, the merged cache and the ledger on ``model`` (``CADASG.assemble``)."""
    cfg = model.config
    nets = CADASGNetworks(dims, cfg.model)
    nets.load_state_dict(payload["train_state"]["nets"])
    cache = new_cache(dims, cfg)
    cache.load_state_dict(payload["cache"])
    privacy = payload["privacy"]
    ledger = (PrivacyLedger.from_state_dict(json.loads(privacy["ledger"])) if privacy is not None
              else PrivacyLedger.non_private())
    model.assemble(nets, cache, list(payload["history"]), ledger=ledger, seconds=seconds, rows=rows,
                   privacy=None if privacy is None else json.loads(privacy["report"]))
    steps = max(int(payload["steps"]), 1)
    workers = json.loads(payload["workers"])
    if len({round(w["params"], 6) for w in workers}) > 1:
        log.warning("workers ended with different parameters: %s", workers)
    model.meta["distributed"] = {
        "workers": int(payload["world_size"]),
        "nodes": len({w["node"] for w in workers}),
        "worker_fingerprints": workers,
        "merge_every": cfg.distributed.merge_every,
        "resumed_from_epoch": int(payload.get("resumed_from", 0)),
        # Rank 0's seconds in its last attempt: reading and encoding its shard, each epoch, the final pass.
        "timing": json.loads(payload["timing"]),
        # Payload one worker hands to all-reduce, per training step (the final pass included).
        "bytes_per_step": {k: v / steps for k, v in json.loads(payload["bytes_sent"]).items()},
        "collectives_per_step": {k: v / steps for k, v in json.loads(payload["calls"]).items()},
        "comm_seconds_per_step": {k: v / steps for k, v in json.loads(payload.get("comm_seconds", "{}")).items()},
        # Exact per-context counts are private data: a private model keeps the plan's shape only.
        "plan": plan.public_summary() if cfg.private else plan.to_dict(),
    }
