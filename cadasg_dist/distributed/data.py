"""Ray Data input: read the table out of core and route each row to the worker that owns its context.

The driver never holds the table: it reads a bounded sample to fit the schema, contexts and
transforms (``preparation_sample``), and counts rows per context in one streaming pass
(``context_counts``). Ray has no built-in split by column value, so ``ContextRouting`` is a custom
``DataConfig`` that routes each row to ``ShardPlan.route`` of the row's context and of a uniform
number hashed from the row's content (``row_uniforms``): routing is a pure function of the row, so
a restarted worker group reads the same shards.

One read of the source: when every node of the cluster is this machine (a local Ray, or
``ray.cluster_utils``), the routing pass reads the table once and writes it as Parquet parts
partitioned by worker into a temporary directory (``cadasg-shards-*``, removed when the driver's
``ContextRouting`` goes); each worker then reads only its own directory. On a cluster of several
hosts, which need not share a disk, each worker's pipeline reads the source and keeps its rows
(N streaming reads); for expensive sources, write the table once as Parquet parts on shared
storage and point the run at that directory.

Scheduling: every task of the data plane (reads, counting, routing, writes) asks for
``DATA_TASK_CPUS`` CPUs (0) and each pass runs at most ``data_concurrency()`` tasks at once. Zero
CPUs keep the passes from deadlocking behind the training workers, which reserve the cores of a
small node while they wait for their shards; the concurrency cap is what bounds them (with no cap,
zero-CPU tasks fan out into a worker process per block: hundreds on a large table). The object
store memory a pass may fill is capped too (``DATA_OBJECT_STORE_BYTES``), so a pass streams.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from ray.train import DataConfig

from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.data.schema import Schema
from cadasg_dist.distributed.plan import ShardPlan, row_uniforms
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.train.rows import EncodedRows

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

DATASET = "train"
DATA_TASK_CPUS = 0.0
# At most this many tasks of one data pass run at once (fewer on a node with fewer CPUs).
MAX_DATA_TASKS = 2
# Object store bytes one pass may hold in flight (its blocks stream through this window).
DATA_OBJECT_STORE_BYTES = 512 * 1024 * 1024
# The driver fits schema, contexts and transforms on at most this many rows (all of a smaller table).
PREPARE_ROWS = 200_000
# The routing pass's column naming each row's worker (the partition directories' key).
WORKER_COLUMN = "cadasg_worker"
DONE_FILE = "_ROUTED"
# A worker encodes its shard in batches of this many rows.
SHARD_BATCH_ROWS = 65_536


def data_concurrency() -> int:
    """Tasks one data pass may run at once: ``MAX_DATA_TASKS``, at most the cluster's CPUs, at least 1."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1
    return max(1, min(MAX_DATA_TASKS, cpus))


def bounded(ds: ray.data.Dataset) -> ray.data.Dataset:
    """``ds`` with the object-store window of a data pass (``DATA_OBJECT_STORE_BYTES``)."""
    options = ds.context.execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=DATA_OBJECT_STORE_BYTES)
    return ds


def task_args() -> dict[str, Any]:
    """Keyword arguments of every Ray Data call of the data plane: zero CPUs, a bounded pool."""
    return {"num_cpus": DATA_TASK_CPUS, "concurrency": data_concurrency()}


def open_table(source: str | Path | pd.DataFrame) -> ray.data.Dataset:
    """A lazy Ray Dataset over a CSV file, a Parquet file or a directory of Parquet parts.

    A DataFrame (already in the caller's memory) is put into the object store as is.
    """
    import ray.data

    if isinstance(source, pd.DataFrame):
        if len(source) == 0:
            raise InvalidDataError("the table has no rows")
        return bounded(ray.data.from_pandas(source))
    text = str(source)
    remote = "://" in text  # s3://, gs://, ...: the workers read it; this machine may not see it
    p = Path(text)
    if not remote and not p.exists():
        raise InvalidDataError(f"data file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return bounded(ray.data.read_csv(text, **task_args()))
    if suffix in (".parquet", ".pq") or (p.is_dir() if not remote else suffix == ""):
        return bounded(ray.data.read_parquet(text, **task_args()))
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

    total = np.zeros(n_contexts, np.int64)
    for batch in ds.map_batches(count, batch_format="pandas", **task_args()).iter_batches(batch_format="numpy"):
        total += batch["counts"].sum(axis=0).astype(np.int64)
    return total


class RouteRows:
    """``map_batches`` function: the rows the plan gives to ``worker`` (or, with ``worker=None``,
    every row with its worker in ``WORKER_COLUMN``)."""

    def __init__(self, plan: dict[str, Any], schema: dict[str, Any], context: dict[str, Any],
                 worker: int | None) -> None:
        self.plan, self.schema, self.context, self.worker = plan, schema, context, worker
        self._ready: tuple[ShardPlan, RuleContextExtractor] | None = None

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if self._ready is None:  # built lazily, in the task: plain dicts travel, objects do not
            self._ready = (ShardPlan.from_dict(self.plan),
                           RuleContextExtractor.from_dict(self.context, Schema.from_dict(self.schema)))
        plan, extractor = self._ready
        if len(batch) == 0:
            return batch if self.worker is not None else batch.assign(**{WORKER_COLUMN: np.int64(0)})
        owner = plan.route(extractor.ids(batch), row_uniforms(batch))
        if self.worker is None:
            return batch.assign(**{WORKER_COLUMN: owner})
        return batch[owner == self.worker]


def single_host() -> bool:
    """Whether every alive node of the Ray cluster runs on this machine's address (one disk)."""
    import ray
    from ray.util import get_node_ip_address

    here = get_node_ip_address()
    return all(n["NodeManagerAddress"] == here for n in ray.nodes() if n.get("Alive"))


class ContextRouting(DataConfig):
    """Give worker i the rows that ``plan`` routes to it; other datasets go whole to every worker."""

    def __init__(self, plan: ShardPlan, schema: Schema, context: dict[str, Any]) -> None:
        """``context`` is the fitted extractor's ``to_dict()``. Call it with Ray initialised: it
        checks whether the shards can go through one local directory (``single_host``)."""
        super().__init__(datasets_to_split=[DATASET])
        self._plan = plan.to_dict()
        self._schema = schema.to_dict()
        self._context = context
        self._num_workers = plan.num_workers
        self._dir: str | None = None
        if single_host():
            self._dir = tempfile.mkdtemp(prefix="cadasg-shards-")
            # Removed when the driver's object goes (or at exit); the pickled copies carry no finalizer.
            weakref.finalize(self, shutil.rmtree, self._dir, True)

    def configure(self, datasets: dict[str, ray.data.Dataset], world_size: int, worker_handles: Any,
                  worker_node_ids: Any, **kwargs: Any) -> list[dict[str, Any]]:
        if world_size != self._num_workers:
            raise ValueError(f"the shard plan is for {self._num_workers} workers but Ray Train started "
                             f"{world_size}; elastic resizing needs a new plan")
        out: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            options = self._get_execution_options(name)
            shards = self.shards(ds, world_size) if name == DATASET else [type(ds).copy(ds)] * world_size
            for rank, mine in enumerate(shards):
                if isinstance(mine, ParquetShard):
                    out[rank][name] = mine
                    continue
                mine.context.execution_options = options
                out[rank][name] = bounded(mine).iterator()
        return out

    def shards(self, ds: ray.data.Dataset, world_size: int) -> list[Any]:
        """One lazy dataset per worker: its partition directory, or (several hosts) the source filtered."""
        if self._dir is None:
            return [ds.map_batches(RouteRows(self._plan, self._schema, self._context, rank), batch_format="pandas",
                                   **task_args()) for rank in range(world_size)]
        root = Path(self._dir)
        if not (root / DONE_FILE).exists():  # a restarted worker group reuses the routed parts
            routed = ds.map_batches(RouteRows(self._plan, self._schema, self._context, None), batch_format="pandas",
                                    **task_args())
            bounded(routed).write_parquet(str(root), partition_cols=[WORKER_COLUMN], mode="overwrite",
                                          ray_remote_args={"num_cpus": DATA_TASK_CPUS},
                                          concurrency=data_concurrency())
            (root / DONE_FILE).write_text("routed\n")
        out = []
        for rank in range(world_size):
            part = root / f"{WORKER_COLUMN}={rank}"
            if not part.is_dir():
                raise InvalidDataError(f"worker {rank}'s shard is empty: use fewer workers for this table")
            out.append(ParquetShard(str(part)))
        return out


class ParquetShard:
    """A worker's routed Parquet parts, read by the worker itself with pyarrow, batch by batch.

    Not a Ray Data read: ``read_parquet`` samples the files in tasks that ask for a CPU, which on a
    small node the training workers hold while they wait for this very shard (a deadlock)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def iter_batches(self, batch_format: str = "pandas", batch_size: int = SHARD_BATCH_ROWS) -> Any:
        import pyarrow.dataset as pads

        if batch_format != "pandas":
            raise ValueError(f"a ParquetShard yields pandas batches, not {batch_format!r}")
        for batch in pads.dataset(self.path, format="parquet").to_batches(batch_size=batch_size):
            yield batch.to_pandas()

def load_shard(shard: Any, encode: Callable[[pd.DataFrame, int], np.ndarray], ids: Callable[[pd.DataFrame], np.ndarray],
               expected_rows: int, spans: Sequence[Any] = ()) -> tuple[EncodedRows, np.ndarray]:
    """This worker's rows, encoded as they stream in: (the rows as ``EncodedRows``, (n,) int64 context ids).

    ``shard`` is a DataIterator (or a Dataset in Ray Train's local mode); ``encode(batch, i)`` encodes
    the i-th batch; ``spans``: the transformer's spans, whose one-hot ones are held as one small
    integer a row (``train.rows``). The rows never exist as one frame: one batch of
    ``SHARD_BATCH_ROWS`` is held as pandas at a time, and the encoded rows go into one store sized
    from the plan (``expected_rows``, grown if the routing's binomial noise exceeds it; its unused
    tail is never touched, so it costs no memory).
    """
    rows: EncodedRows | None = None
    cs = np.empty(0, np.int64)
    for i, batch in enumerate(shard.iter_batches(batch_format="pandas", batch_size=SHARD_BATCH_ROWS)):
        if len(batch) == 0:
            continue
        x, c = encode(batch, i), ids(batch)
        if rows is None:
            cap = max(expected_rows + expected_rows // 50 + 1024, len(x))
            rows, cs = EncodedRows(spans, x.shape[1], cap), np.empty(cap, np.int64)
        n = len(rows)
        if n + len(x) > len(cs):
            cs = _grown(cs, n, max(n + len(x), len(cs) * 5 // 4))
        rows.append(x)
        cs[n:n + len(x)] = c
    if rows is None:
        raise InvalidDataError("this worker's shard is empty: use fewer workers for this table")
    return rows, cs[:len(rows)]


def _grown(a: np.ndarray, n: int, cap: int) -> np.ndarray:
    out = np.empty((cap, *a.shape[1:]), a.dtype)
    out[:n] = a[:n]
    return out
