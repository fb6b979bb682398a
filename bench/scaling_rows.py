"""Scaling on tables of millions of rows (``bench/scaling.py --rows N``): in-process vs Ray Train
with 1 and 2 workers, and sampling to Parquet.

    .venv/bin/python bench/scaling.py --rows 1000000 --epochs 1
    .venv/bin/python bench/scaling.py --rows 10000000 --epochs 1 --modes ray2 --sample-rows 0 --batch-size 4000

The table is generated here: the 80 % training split of HI (``bench/splits.py``) resampled to N
rows with 1 % jitter (noise of 1 % of the column's standard deviation) on its continuous columns,
written as Parquet parts of 1M rows under ``bench/.cache/scaling/`` (kept for the next run). The
20 % holdout is never resampled: utility is scored on it.

Each mode runs in its own subprocess (so its peak RSS is its own) with a watcher thread that polls
``/proc`` for the peak RSS (VmHWM) of every Ray Train worker and the number of Ray worker processes
(children of this run's raylet). Printed per mode: rows/s per epoch (rows x epochs / seconds of the
epoch loop), start-up seconds to the first step, peak RSS of the driver and of each worker, the
peak number of Ray worker processes, and the utility ratio on the holdout after the fixed budget
(``--epochs``). Sampling: ``--sample-rows`` rows written to Parquet in chunks in this process and by
``sample_on_ray`` with 2 workers, rows/s and peak RSS. Results go to bench/results/scaling_rows.json.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "bench" / ".cache" / "scaling"
RESULTS = ROOT / "bench" / "results"
PART_ROWS = 1_000_000


def table(rows: int, seed: int = 0) -> tuple[Path, pd.DataFrame, object]:
    """(directory of Parquet parts with ``rows`` rows, the holdout, the table spec)."""
    from bench.splits import load_table, split

    df, spec = load_table("HI")
    train, test = split(df, seed=seed)
    out = CACHE / f"hi_{rows}"
    if not (out / "_DONE").exists():
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c]) and train[c].nunique() > 20]
        for i, start in enumerate(range(0, rows, PART_ROWS)):
            part = train.iloc[rng.integers(0, len(train), min(PART_ROWS, rows - start))].reset_index(drop=True)
            for c in numeric:
                noisy = part[c].to_numpy(np.float64) + rng.normal(0, 0.01 * train[c].std(), len(part))
                part[c] = noisy.round().astype(train[c].dtype) if train[c].dtype.kind in "iu" else noisy
            part.to_parquet(out / f"part-{i:04d}.parquet", index=False)
        (out / "_DONE").write_text("ok\n")
    return out, test, spec


class Watch:
    """Peak VmHWM of Ray Train workers (by pid) and peak count of the raylet's children."""

    def __init__(self) -> None:
        self.workers: dict[int, float] = {}
        self.processes = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            time.sleep(0.5)

    def poll(self) -> None:
        import ray

        node = getattr(ray._private.worker, "_global_node", None)
        if node is None:
            return
        raylet = node.all_processes["raylet"][0].process.pid
        count = 0
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) != raylet:
                    continue
                count += 1
                if "RayTrainWorker" in Path(f"/proc/{entry}/cmdline").read_text():
                    hwm = [ln for ln in Path(f"/proc/{entry}/status").read_text().splitlines()
                           if ln.startswith("VmHWM")]
                    gb = int(hwm[0].split()[1]) / 2**20
                    self.workers[int(entry)] = max(self.workers.get(int(entry), 0.0), gb)
            except (OSError, IndexError, ValueError):
                continue
        self.processes = max(self.processes, count)

    def stop(self) -> None:
        self._stop.set()


def config(spec, epochs: int, workers: int, storage: str, batch_size: int = 0):
    from cadasg_dist.config import CADASGConfig, ContextConfig, TrainConfig

    cfg = CADASGConfig(target=spec.target, context=ContextConfig(columns=tuple(spec.contexts)),
                       train=TrainConfig(epochs=epochs, seed=0))
    if batch_size:
        cfg = cfg.replace(**{"train.batch_size": batch_size})
    return cfg.replace(**{"distributed.num_workers": workers, "distributed.storage_path": storage,
                          "distributed.max_failures": 0})


def run_mode(mode: str, rows: int, epochs: int, batch_size: int = 0) -> dict:
    """One mode, in this (fresh) process."""
    import ray

    from bench.engine import score
    from cadasg_dist.synthesizer import CADASG

    parts, test, spec = table(rows)
    out: dict = {"mode": mode, "rows": rows, "epochs": epochs, "batch_size": batch_size or "default"}
    t0 = time.perf_counter()
    if mode == "inproc":
        from cadasg_dist.privacy.ledger import PrivacyLedger
        from cadasg_dist.train.fit import fit_local

        model = CADASG(config(spec, epochs, 1, "", batch_size))
        prepared = model.prepare(pd.read_parquet(parts))
        out["first_step_s"] = time.perf_counter() - t0
        marks: list[float] = []
        state, cache = fit_local(model.config, prepared.x, prepared.ids, prepared.dims,
                                 progress=lambda r: marks.append(r.seconds))
        model.assemble(state.nets, cache, state.history, ledger=PrivacyLedger.non_private(), seconds=0, rows=rows)
        epoch_s = list(np.diff([0.0, *marks]))
    else:
        from cadasg_dist.distributed.trainer import fit_distributed

        workers = int(mode[-1])
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        watch = Watch()
        try:
            storage = tempfile.mkdtemp(prefix="cadasg-bench-ray-")
            model = fit_distributed(CADASG(config(spec, epochs, workers, storage, batch_size)), parts)
        finally:
            watch.stop()
            ray.shutdown()
        timing = model.meta["distributed"]["timing"]
        epoch_s = list(timing["epoch_s"])
        loop = sum(epoch_s) + timing["final_pass_s"] + timing["report_s"]
        out["first_step_s"] = timing["driver_prepare_s"] + timing["trainer_fit_s"] - loop
        out["worker_peak_rss_gb"] = sorted(watch.workers.values())
        out["ray_processes_peak"] = watch.processes
        meta = model.meta["distributed"]  # rank 0's all-reduce: calls and wall seconds a step (waits included)
        out["collectives_per_step"] = round(sum(meta["collectives_per_step"].values()), 1)
        out["comm_ms_per_step"] = round(1000 * sum(meta["comm_seconds_per_step"].values()), 2)
    # the driver's peak up to here: training only (the scoring below reads a 1M-row part and fits
    # the downstream models, which the driver of a real run does not)
    out["driver_peak_rss_fit_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["epoch_s"] = epoch_s
    out["rows_per_s"] = rows * len(epoch_s) / sum(epoch_s)
    out["wall_s"] = time.perf_counter() - t0
    out["driver_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    train_like = pd.read_parquet(next(parts.glob("part-*.parquet"))).iloc[:20_000]
    out["utility_ratio"] = score(mode, model.sample(20_000, seed=1), train_like, test, spec, 0)["utility_ratio"]
    return out


def run_sampling(rows: int, sample_rows: int, how: str) -> dict:
    """Train a small model once (cached), then write ``sample_rows`` rows to Parquet ``how`` (inproc|ray2)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cadasg_dist.sampled import load_for_sampling
    from cadasg_dist.synthesizer import CADASG

    parts, _, spec = table(rows)
    model_dir = CACHE / "sampling_model"
    if not model_dir.exists():
        CADASG(config(spec, 2, 1, "")).fit(pd.read_parquet(next(parts.glob("part-*.parquet"))).iloc[:50_000]).save(
            model_dir)
    out_dir = Path(tempfile.mkdtemp(prefix="cadasg-bench-sample-"))
    t0 = time.perf_counter()
    if how == "inproc":
        model, writer = load_for_sampling(model_dir), None  # as `cadasg sample` loads it
        for i, start in enumerate(range(0, sample_rows, 200_000)):
            frame = pa.Table.from_pandas(model.sample(min(200_000, sample_rows - start), seed=i), preserve_index=False)
            writer = writer or pq.ParquetWriter(out_dir / "s.parquet", frame.schema)
            writer.write_table(frame)
        writer.close()
    else:
        from cadasg_dist.distributed.sampling import sample_on_ray

        sample_on_ray(model_dir, sample_rows, out_dir / "parts", num_workers=2, seed=0, conditions=None)
    seconds = time.perf_counter() - t0
    return {"mode": f"sample_{how}", "rows": sample_rows, "seconds": seconds, "rows_per_s": sample_rows / seconds,
            "driver_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def child(argv: list[str]) -> dict:
    """Run one mode in a subprocess; its RESULT line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"mode": argv[1], "failed": proc.returncode, "stderr": proc.stderr[-2000:]}
    return json.loads(lines[-1][len("RESULT "):])


def main_rows(rows: int, epochs: int, modes: list[str], sample_rows: int, batch_size: int = 0) -> None:
    table(rows)  # generated once, before any timing
    results = []
    for mode in modes:
        results.append(child(["--mode", mode, str(rows), str(epochs), str(batch_size)]))
        print(json.dumps(results[-1]), flush=True)
    for how in ("inproc", "ray2") if sample_rows else ():
        results.append(child(["--sample", how, str(rows), str(sample_rows)]))
        print(json.dumps(results[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scaling_rows_{rows}_{'_'.join(modes)}.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    kind, what, n, k = sys.argv[1:5]
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    result = run_mode(what, int(n), int(k), batch) if kind == "--mode" else run_sampling(int(n), int(k), what)
    print("RESULT " + json.dumps(result))
