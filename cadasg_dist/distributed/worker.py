"""The per-worker train function that Ray Train runs: ``train_loop_per_worker(config)``.

Each worker reads its shard (the rows of its contexts, routed by ``data.ContextRouting``), then
runs the engine's ``train_step`` on it with three things attached (``sync``): gradients reduced
before every optimizer step, loss-balancing norms averaged, and a ``ShardCache`` merged every
``distributed.merge_every`` steps and at every epoch end. Every worker takes the same number of
steps per epoch (that of one worker on the whole table), so collectives line up.

Checkpoints (every epoch, written by rank 0 and reported with ``ray.train.report``): networks,
the three optimizers, the loss balancer, the merged cache, the privacy state (ledger and
accountant), every worker's RNG states, the epoch and the history. A restarted worker group
(``FailureConfig(max_failures)``) loads all of it and goes on from the next epoch. A private run's
ledger comes back with the steps it had counted, plus those the spend journal shows begun after the
checkpoint (``journal``): they are counted once, as spent, and the resumed epoch takes only the
steps left in it. A non-private run replays the lost steps from the restored RNG states.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.data.schema import Schema
from cadasg_dist.data.transforms import DataTransformer
from cadasg_dist.distributed.data import DATASET, load_shard
from cadasg_dist.distributed.journal import StepTrace
from cadasg_dist.distributed.plan import ShardPlan
from cadasg_dist.distributed.sync import Collectives, GradientSync, ShardCache, SyncedBalancer, sync_metrics
from cadasg_dist.errors import ConfigError
from cadasg_dist.model.networks import ModelDims
from cadasg_dist.privacy import entropy
from cadasg_dist.train.fit import EpochReport, final_cache_pass
from cadasg_dist.train.loop import TrainingLoop, split_batches
from cadasg_dist.train.rows import EncodedRows
from cadasg_dist.train.step import Batch, TrainState

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, parsed from Ray's plain ``train_loop_config`` dict."""

    cfg: CADASGConfig
    schema: Schema
    transformer: dict[str, Any]
    context: dict[str, Any]
    dims: ModelDims
    plan: ShardPlan
    total_rows: int
    # The preprocessing releases of a private run (a PrivacyLedger state dict); None when not private.
    ledger: dict[str, Any] | None = None
    # The run's budget plan (a BudgetPlan as plain data), planned once by the driver; None when not private.
    budget: dict[str, Any] | None = None
    # The name of the run's spend journal actor (a private run on Ray Train; journal.py).
    journal: str | None = None
    # Test hook: each worker writes its PID and the steps it begins to files in this folder (StepTrace).
    trace_dir: str | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.total_rows / self.cfg.train.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {"cfg": self.cfg.to_dict(), "schema": self.schema.to_dict(), "transformer": self.transformer,
                "context": self.context, "dims": self.dims.to_dict(), "plan": self.plan.to_dict(),
                "total_rows": self.total_rows, "ledger": self.ledger, "budget": self.budget,
                "journal": self.journal, "trace_dir": self.trace_dir}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WorkerConfig:
        return cls(CADASGConfig.from_dict(raw["cfg"]), Schema.from_dict(raw["schema"]), raw["transformer"],
                   raw["context"], ModelDims.from_dict(raw["dims"]), ShardPlan.from_dict(raw["plan"]),
                   int(raw["total_rows"]), raw.get("ledger"), raw.get("budget"), raw.get("journal"),
                   raw.get("trace_dir"))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    wc = WorkerConfig.from_dict(config)
    import ray.train

    quiet_console()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(wc.cfg.train.threads or 1)
    start = time.perf_counter()
    xs, cs = encode_shard(wc, ray.train.get_dataset_shard(DATASET), rank)
    run = WorkerRun(wc, rank, world, local_rows=len(xs))
    run.timing["load_s"] = time.perf_counter() - start
    run.trace = StepTrace(wc.trace_dir, rank)
    first = run.restore(ray.train.get_checkpoint())
    progress = worker_progress(rank)
    for epoch in range(first, run.epochs):
        metrics = run.epoch(xs, cs, epoch + 1)
        run.report(epoch + 1, metrics)
        progress(EpochReport(epoch + 1, run.epochs, time.perf_counter() - start, metrics))
    run.finish(xs, cs)


def worker_progress(rank: int) -> Callable[[EpochReport], None]:
    """Rank 0 writes the CLI's epoch lines to its stdout, which Ray relays to the driver (with
    ``log_to_driver``, Ray's default), so a run shows its progress live. The worker's console then
    carries those lines and warnings, not Ray Train's INFO line per report and checkpoint nor
    Ray Data's progress bars for reading a shard (``quiet_console``; both stay in Ray's log files)."""
    if rank != 0:
        return lambda report: None
    from cadasg_dist.train.progress import epoch_line, line_due

    def show(report: EpochReport) -> None:
        if line_due(report):  # not print(): Ray Train patches it into INFO log records
            sys.stdout.write(epoch_line(report) + "\n")
            sys.stdout.flush()

    return show


class _NoRayInfo(logging.Filter):
    """Ray Train's and Ray Data's INFO records (by source path: some loggers are named by file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace("\\", "/")
        return record.levelno >= logging.WARNING or not ("/ray/train/" in path or "/ray/data/" in path)


def quiet_console() -> None:
    """Drop Ray Train's and Ray Data's INFO records and progress bars from this process's console
    (Ray's log files keep them): a worker's, and the driver's, so a run shows the library's lines."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    quiet = _NoRayInfo()
    for logger in (logging.getLogger(), logging.getLogger("ray.train"), logging.getLogger("ray.data")):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(quiet)


def encode_shard(wc: WorkerConfig, shard: Any, rank: int) -> tuple[EncodedRows, torch.Tensor]:
    """This worker's rows (``EncodedRows``: indexing gives (k, D) float32) and (n,) context ids,
    encoded batch by batch as they stream from its Ray Data shard (``data.load_shard``): the worker
    never holds them as pandas.

    Held encoded rather than re-read each epoch: encoding is most of a read's cost and epochs
    shuffle the whole shard; held compactly (a one-hot span as one byte), a row takes a few dozen
    bytes (measured in bench/scaling.py)."""
    transformer = DataTransformer.from_dict(wc.schema, wc.transformer)
    extractor = RuleContextExtractor.from_dict(wc.context, wc.schema)
    # Tie spreading is noise too: secret in a private run, as in the engine's private fit.
    base = wc.cfg.train.seed + rank

    def encode(batch: pd.DataFrame, i: int) -> np.ndarray:
        if wc.cfg.private:
            return transformer.encode(batch, seed=entropy.secret_seed())
        seed = base if i == 0 else int(np.random.SeedSequence([base, i]).generate_state(1)[0])
        return transformer.encode(batch, seed=seed)

    rows, ids = load_shard(shard, encode, extractor.ids, wc.plan.loads[rank], transformer.spans)
    return rows, torch.from_numpy(ids)


def worker_device(use_gpu: bool) -> torch.device:
    """The GPU Ray gave this worker (``--use-gpu``), else the CPU."""
    if not use_gpu:
        return torch.device("cpu")
    import ray.train.torch

    return ray.train.torch.get_device()


def worker_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the run's seed (one worker trains like ``fit_local``); others get distinct streams
    so that their noise shares are independent."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class WorkerRun:
    """One worker's training state and the steps it takes (epochs, checkpoints, the final pass)."""

    def __init__(self, wc: WorkerConfig, rank: int, world: int, local_rows: int) -> None:
        self.wc, self.rank, self.world, self.local_rows = wc, rank, world, local_rows
        cfg = wc.cfg
        self.comm = Collectives(world)
        seed: int | None = worker_seed(cfg.train.seed, rank)
        self.privacy: Any = None  # a private.ShardPrivacy when training is private
        self.hidden_metrics: tuple[str, ...] = ()
        if cfg.private:
            from cadasg_dist.distributed.private import REAL_ROW_METRICS, ShardPrivacy

            self.hidden_metrics = REAL_ROW_METRICS  # computed on real rows: never reported
            self.privacy = ShardPrivacy(cfg, wc.dims, wc.ledger or {}, plan=wc.budget, n_rows=wc.total_rows,
                                        local_rows=local_rows, world=world, comm=self.comm, journal=wc.journal)
            cfg = self.privacy.run_cfg  # the cache noise calibrated for the run
            seed = None  # the generator below draws the cache's noise: secret
        else:
            self.check_shard(local_rows)
        self.cfg = cfg
        # Identical networks on every worker (same seed), then per-worker sampling and noise streams.
        self.state = TrainState.create(wc.dims, cfg, device=worker_device(cfg.distributed.use_gpu))
        self.state.generator.manual_seed(entropy.secret_seed() if seed is None else seed)
        self.epochs = self.privacy.epochs if self.privacy is not None else cfg.train.epochs
        if self.privacy is not None:
            self.privacy.dp.attach(self.state)
        if world > 1:  # one worker has nothing to synchronise: it trains exactly like fit_local
            self.state.balancer = SyncedBalancer(cfg.loss, self.comm)
            self.grad_sync = GradientSync(self.state, self.comm)
        self.cache = ShardCache(wc.dims.contexts, wc.dims.features, cfg.model.latent_dim, cfg.cache, wc.dims.strata,
                                world_size=world, private=cfg.private)
        self.rng = np.random.default_rng(seed)  # shuffling (not used by a private run's Poisson batches)
        self.loop = TrainingLoop(cfg, self.state, self.cache, guard=None if self.privacy is None else self.privacy.dp,
                                 hidden=self.hidden_metrics, after_step=self._merge_cache)
        self.history: list[dict[str, float]] = []
        self.resumed_from = 0  # the epoch of the checkpoint this worker group restarted from (0 = fresh)
        self.first_step = 0
        self.finished = False  # restored from the final checkpoint: the final cache pass is done and counted
        self.trace = StepTrace(None, rank)
        self.timing: dict[str, Any] = {"load_s": 0.0, "epoch_s": [], "epoch_cpu_s": [], "final_pass_s": 0.0,
                                       "report_s": 0.0}

    def check_shard(self, rows: int) -> None:
        steps = self.wc.steps_per_epoch
        if rows < steps:
            raise ConfigError(f"worker {self.rank} holds {rows} rows but an epoch has {steps} steps: "
                              f"use fewer workers or a larger train.batch_size")

    # --- training -----------------------------------------------------------------------------
    def batches(self, xs: EncodedRows, cs: torch.Tensor) -> Iterator[Batch]:
        """One epoch: shuffled slices of this shard (as many as one worker would take on the whole
        table), or, when private, Poisson batches at the global sample rate."""
        if self.privacy is not None:
            return self.trace.steps(self.privacy.batches(xs, cs))
        return self.trace.steps(split_batches(xs, cs, self.wc.steps_per_epoch, self.rng))

    def epoch(self, xs: EncodedRows, cs: torch.Tensor, number: int | None = None) -> dict[str, float]:
        """Train epoch ``number`` (1-based; the next after the history when None) and return its mean
        metrics over workers."""
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return self._epoch(xs, cs, number)
        finally:
            self.timing["epoch_s"].append(time.perf_counter() - start)
            # CPU seconds of this process: the work itself, whatever other jobs on the host take.
            self.timing["epoch_cpu_s"].append(time.process_time() - cpu)

    def _epoch(self, xs: EncodedRows, cs: torch.Tensor, number: int | None) -> dict[str, float]:
        means = self.loop.run_epoch(self.batches(xs, cs))
        if self.cache.pending_updates:
            self.cache.sync(self.comm)  # epoch end: a checkpoint holds merged statistics only
        if means is None:  # a private run out of budget: every worker stops at the same step
            return {}
        means = sync_metrics(means, self.comm)
        self.history.append({"epoch": len(self.history) + 1 if number is None else number, **means})
        return means

    def _merge_cache(self) -> None:
        """After each step: merge the workers' caches every ``distributed.merge_every`` steps."""
        if self.state.step % self.wc.cfg.distributed.merge_every == 0:
            self.cache.sync(self.comm)

    def finish(self, xs: EncodedRows, cs: torch.Tensor) -> None:
        """Final cache pass over every worker's rows (one merged noisy release), then the final report."""
        start = time.perf_counter()
        private = self.privacy is not None
        # Skipped by a group restarted after the final report, and by one that lost a begun pass
        # (counted already: a second release would spend beyond the plan; journal.py).
        if self.cfg.cache.final_pass and not self.finished and not (private and self.privacy.dp.final_released):
            with self.privacy.dp.final_release(self.cache) if private else contextlib.nullcontext():
                final_cache_pass(self.cfg, self.state, self.cache, xs, cs)  # the ShardCache noises 1/N
                self.cache.sync(self.comm)
        self.timing["final_pass_s"] = time.perf_counter() - start
        self.report(self.epochs, self.history[-1] if self.history else {}, final=True)

    def fingerprint(self) -> dict[str, Any]:
        """Where this worker ran and a digest of its parameters (equal on every worker when in sync)."""
        import ray

        params = [p.detach().double() for p in self.state.nets.parameters()]
        digest = sum(float(p.sum()) + float(p.pow(2).sum()) for p in params)
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        rows = {} if self.privacy is not None else {"rows": self.local_rows}  # a shard's size is exact
        return {"rank": self.rank, "node": node, "params": digest, **rows}

    # --- checkpoints --------------------------------------------------------------------------
    def payload(self, epoch: int) -> dict[str, Any]:
        # A private run's streams are noise: secret, never written to a checkpoint (restarts draw anew).
        rngs = self._gather(None if self.privacy is not None else
                            {"torch": self.state.generator.get_state(),
                             "numpy": json.dumps(self.rng.bit_generator.state)})
        return {"epoch": epoch, "world_size": self.world, "train_state": self.state.state_dict(),
                "cache": self.cache.merged_cache().state_dict(), "history": self.history, "rngs": rngs,
                "privacy": self.privacy.state_dict() if self.privacy is not None else None,
                "plan": json.dumps(self.wc.plan.to_dict()), "resumed_from": self.resumed_from,
                # Steps of this attempt (the byte counts below restart with a restarted worker).
                "steps": self.state.step - self.first_step, "timing": json.dumps(self.timing),
                "bytes_sent": json.dumps(self.comm.bytes_sent),
                "calls": json.dumps(self.comm.calls), "comm_seconds": json.dumps(self.comm.seconds),
                "workers": json.dumps(self._gather(self.fingerprint()))}

    def report(self, epoch: int, metrics: dict[str, float], final: bool = False) -> None:
        import ray.train
        from ray.train import Checkpoint, CheckpointUploadMode

        start = time.perf_counter()
        payload = self.payload(epoch)  # every rank takes part in gathering the RNG states
        payload["final"] = final
        out = {**metrics, "epoch": epoch, "final": final}
        # Every rank reports in the background during training, the final report before returning.
        # Ray Train queues one report per worker until the controller's next poll: a blocking
        # report on any rank stalls the others at their next all-reduce (measured: 2-worker epochs
        # of 0.6 s took 2.0 s, the controller's default poll interval, until this was asynchronous).
        mode = CheckpointUploadMode.SYNC if final else CheckpointUploadMode.ASYNC
        if self.rank != 0:
            ray.train.report(out, checkpoint_upload_mode=mode)
        else:
            path = Path(tempfile.mkdtemp(prefix="cadasg-ckpt-"))
            torch.save(payload, path / STATE_FILE)
            ray.train.report(out, checkpoint=Checkpoint.from_directory(str(path)),
                             checkpoint_dir_name=f"{'final' if final else 'epoch'}_{epoch:05d}",
                             checkpoint_upload_mode=mode, delete_local_checkpoint_after_upload=True)
        self.timing["report_s"] += time.perf_counter() - start  # the final report's own time is not in it

    def restore(self, checkpoint: Any) -> int:
        """Load the last checkpoint if the group was restarted; returns the first epoch to run. A
        private group with no checkpoint still counts the steps an earlier attempt began."""
        if checkpoint is None:
            return self._settle_lost() if self.privacy is not None else 0
        with checkpoint.as_directory() as d:
            payload = load_payload(Path(d))
        self.state.load_state_dict(payload["train_state"])
        self.cache.load_merged(payload["cache"])
        self.history = list(payload["history"])
        rngs = payload["rngs"]
        mine = rngs[self.rank] if len(rngs) == self.world else None  # a resized group keeps fresh streams
        if mine is not None:
            self.state.generator.set_state(mine["torch"])
            self.rng.bit_generator.state = json.loads(mine["numpy"])
        if self.privacy is not None:
            self.privacy.load(payload["privacy"], self.cache)
        log.info("worker %d resumed at epoch %d", self.rank, payload["epoch"])
        self.resumed_from = int(payload["epoch"])
        self.first_step = self.state.step
        self.finished = bool(payload.get("final", False))
        if self.privacy is not None and not self.finished:  # past the epochs whose steps were all lost
            return max(self.resumed_from, self._settle_lost())
        return self.resumed_from

    def _settle_lost(self) -> int:
        """Count the steps an earlier attempt began after the checkpoint (rank 0 reads the journal
        before any worker of this group can begin a step; every worker applies the same count);
        returns the epoch the counted steps are in."""
        dp = self.privacy.dp
        dp.settle_lost(self._broadcast(dp.journal_state() if self.rank == 0 else None))
        return self.privacy.first_epoch()

    def _broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every worker."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        out = [obj]
        dist.broadcast_object_list(out, src=0)
        return out[0]

    def _gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def load_payload(path: Path) -> dict[str, Any]:
    return torch.load(path / STATE_FILE, weights_only=True, map_location="cpu")  # a GPU worker's tensors too
