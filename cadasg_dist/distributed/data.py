"""Ray Data input: read the table out of core and route each row to the worker that owns its context.

The driver never holds the table: it reads a bounded sample to fit the schema, contexts and
transforms (``preparation_sample``), and counts rows per context in one streaming pass
(``context_counts``). Ray has no built-in split by column value, so ``ContextRouting`` is a custom
``DataConfig``: each worker gets its own lazy pipeline, ``read -> keep my rows``, where "my rows"
is ``ShardPlan.route`` of the row's context and of a uniform number hashed from the row's content
(``row_uniforms``). The hash makes routing a pure function of the row: the N pipelines agree on
every row without talking to each other, and a restarted worker group reads the same shards.

Cost: each worker's pipeline reads every file and drops the rows that are not its own (N reads in
all, each streaming). For expensive sources, write the table once as Parquet parts partitioned by
context and point the run at that directory.

Scheduling: read and routing tasks ask for ``DATA_TASK_CPUS`` CPUs (0 by default). The shards are
read once, at start-up, while the training workers (which reserve the cores) wait for them; on a
small node a CPU reservation for Data would deadlock behind the trainers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from ray.train import DataConfig

from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.data.schema import Schema
from cadasg_dist.distributed.plan import ShardPlan, row_uniforms
from cadasg_dist.errors import InvalidDataError

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

DATASET = "train"
DATA_TASK_CPUS = 0.0
# The driver fits schema, contexts and transforms on at most this many rows (all of a smaller table).
PREPARE_ROWS = 200_000


def open_table(source: str | Path | pd.DataFrame) -> ray.data.Dataset:
    """A lazy Ray Dataset over a CSV file, a Parquet file or a directory of Parquet parts.

    A DataFrame (already in the caller's memory) is put into the object store as is.
    """
    import ray.data

    if isinstance(source, pd.DataFrame):
        if len(source) == 0:
            raise InvalidDataError("the table has no rows")
        return ray.data.from_pandas(source)
    text = str(source)
    remote = "://" in text  # s3://, gs://, ...: the workers read it; this machine may not see it
    p = Path(text)
    if not remote and not p.exists():
        raise InvalidDataError(f"data file not found: {p}")
    args: dict[str, Any] = {"ray_remote_args": {"num_cpus": DATA_TASK_CPUS}}
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return ray.data.read_csv(text, **args)
    if suffix in (".parquet", ".pq") or (p.is_dir() if not remote else suffix == ""):
        return ray.data.read_parquet(text, **args)
    raise InvalidDataError(f"cannot read {text}: use a .csv or .parquet file, or a directory of .parquet parts")


def preparation_sample(ds: ray.data.Dataset, max_rows: int = PREPARE_ROWS, seed: int = 0) -> tuple[pd.DataFrame, int]:
    """(sample, total rows): every row when the table has at most ``max_rows``, else a uniform sample.

    Privacy caveat: the sample is what the transforms are fitted on (bounds, quantiles, category
    sets), exactly as ``CADASG.prepare`` fits them on the whole table; declare them in the config
    to keep them out of the data. A category missing from the sample makes the run fail with its
    name (declare it), rather than be dropped.
    """
    total = ds.count()
    if total == 0:
        raise InvalidDataError("the table has no rows")
    if total <= max_rows:
        return ds.to_pandas(), total
    frac = min(1.0, 1.1 * max_rows / total)
    return ds.random_sample(frac, seed=seed).limit(max_rows).to_pandas(), total


def context_counts(ds: ray.data.Dataset, schema: Schema, context: dict[str, Any]) -> np.ndarray:
    """(C,) rows per context, counted in one streaming pass (only the count vectors reach the driver)."""
    n_contexts = len(context["domain"])

    def count(batch: pd.DataFrame) -> dict[str, np.ndarray]:
        ids = RuleContextExtractor.from_dict(context, schema).ids(batch)
        return {"counts": np.bincount(ids, minlength=n_contexts)[None, :]}

    rows = ds.map_batches(count, batch_format="pandas", num_cpus=DATA_TASK_CPUS).take_all()
    return np.sum([r["counts"] for r in rows], axis=0).astype(np.int64) if rows else np.zeros(n_contexts, np.int64)


class RouteRows:
    """``map_batches`` function keeping the rows the plan gives to ``worker``."""

    def __init__(self, plan: dict[str, Any], schema: dict[str, Any], context: dict[str, Any], worker: int) -> None:
        self.plan, self.schema, self.context, self.worker = plan, schema, context, worker
        self._ready: tuple[ShardPlan, RuleContextExtractor] | None = None

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if self._ready is None:  # built lazily, in the task: plain dicts travel, objects do not
            self._ready = (ShardPlan.from_dict(self.plan),
                           RuleContextExtractor.from_dict(self.context, Schema.from_dict(self.schema)))
        plan, extractor = self._ready
        if len(batch) == 0:
            return batch
        keep = plan.route(extractor.ids(batch), row_uniforms(batch)) == self.worker
        return batch[keep]


class ContextRouting(DataConfig):
    """Give worker i the rows that ``plan`` routes to it; other datasets go whole to every worker."""

    def __init__(self, plan: ShardPlan, schema: Schema, context: dict[str, Any]) -> None:
        """``context`` is the fitted extractor's ``to_dict()``."""
        super().__init__(datasets_to_split=[DATASET])
        self._plan = plan.to_dict()
        self._schema = schema.to_dict()
        self._context = context
        self._num_workers = plan.num_workers

    def configure(self, datasets: dict[str, ray.data.Dataset], world_size: int, worker_handles: Any,
                  worker_node_ids: Any, **kwargs: Any) -> list[dict[str, Any]]:
        if world_size != self._num_workers:
            raise ValueError(f"the shard plan is for {self._num_workers} workers but Ray Train started "
                             f"{world_size}; elastic resizing needs a new plan")
        out: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            options = self._get_execution_options(name)
            for rank in range(world_size):
                if name == DATASET:
                    mine = ds.map_batches(RouteRows(self._plan, self._schema, self._context, rank),
                                          batch_format="pandas", num_cpus=DATA_TASK_CPUS)
                else:
                    mine = type(ds).copy(ds)
                mine.context.execution_options = options
                out[rank][name] = mine.iterator()
        return out


def read_shard(shard: Any) -> pd.DataFrame:
    """Materialise this worker's rows (a DataIterator, or a Dataset in Ray Train's local mode)."""
    frames = [b for b in shard.iter_batches(batch_format="pandas", batch_size=65_536) if len(b)]
    if not frames:
        raise InvalidDataError("this worker's shard is empty: use fewer workers for this table")
    return pd.concat(frames, ignore_index=True)
