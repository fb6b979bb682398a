"""Sampling benchmark: rows/s and peak RSS of in-process ``sample()`` and of ``sample_to_file`` to
Parquet, against the old path (a git revision, ``--baseline``) in the same run.

Each measurement runs in its own process, pinned to one core (``taskset -c 0`` where available)
with one BLAS (and torch) thread, so its peak RSS (``ru_maxrss``) is its own and rows/s is per
core; the model is loaded as ``cadasg sample`` loads it (``load_for_sampling``: numpy, no torch,
where the revision has it). The old path is the baseline revision's ``cadasg_dist`` (extracted
with ``git archive``): ``sample()`` in memory, and, for a file, ``sample()`` then ``write_table``
as its CLI did. The big file run (``--big``, 50M rows by default) is new-path only: the old path
builds it in memory. Rows/s is counted on CPU time of the process as well as wall time: on a
shared machine the wall clock also counts time spent waiting for the core. Last, the start-up of
``cadasg sample MODEL --n 5`` (a fresh process: imports, loading the model, five rows), old and new,
median wall time and peak RSS of five runs, not pinned.

    .venv/bin/python bench/sampling.py                       # HI model trained for 1 epoch, 1M and 50M rows
    .venv/bin/python bench/sampling.py --model m --rows 1000000 --big 0 --baseline main --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "HI.csv"


def child(kind: str, model_dir: str, n: int, out: str) -> None:
    """One measurement in this process: print its JSON line. The model is loaded the way ``cadasg
    sample`` loads it: for sampling only (numpy) where the revision has it, else whole (torch)."""
    try:
        from cadasg_dist.sampled import load_for_sampling

        model = load_for_sampling(model_dir)
    except ImportError:  # a revision before the sampling pack
        import torch

        torch.set_num_threads(1)
        from cadasg_dist.synthesizer import CADASG

        model = CADASG.load(model_dir)
    model.sample(2_000, seed=0)  # warm-up: priors, calibration, allocators
    wall, cpu = time.perf_counter(), time.process_time()
    if kind == "sample":
        rows = model.sample(n, seed=1)
        assert len(rows) == n
    elif kind == "file_old":
        from cadasg_dist.data.io import write_table

        write_table(model.sample(n, seed=1), out)
    else:
        model.sample_to_file(out, n, seed=1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_rss": peak}))


def measure(tree: Path, kind: str, model_dir: str, n: int, out: str, timeout: int) -> dict:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}  # one BLAS thread: numpy's OpenBLAS would start one per core
    cmd = [*pin, sys.executable, str(ROOT / "bench" / "sampling.py"), "--child", kind, "--model", model_dir,
           "--rows", str(n), "--out", out]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{kind} ({tree}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def paired(old_tree: Path | None, old_kind: str, new_kind: str, model_dir: str, n: int, out: str,
           timeout: int, repeats: int) -> tuple[dict | None, dict]:
    """(old, new): each the run of median CPU time of ``repeats`` runs, old and new alternating (a
    single run on this machine varies by about 10 %)."""
    olds, news = [], []
    for _ in range(repeats):
        if old_tree is not None:
            olds.append(measure(old_tree, old_kind, model_dir, n, out, timeout))
        news.append(measure(ROOT, new_kind, model_dir, n, out, timeout))
    median = lambda runs: sorted(runs, key=lambda r: r["cpu"])[len(runs) // 2]  # noqa: E731
    return (median(olds) if olds else None), median(news)


def startup(tree: Path, model_dir: str, out: str, repeats: int = 5) -> tuple[float, float]:
    """(median wall seconds, median peak RSS bytes) of ``cadasg sample MODEL --n 5 --out FILE.csv``
    as a fresh process with ``tree``'s package: start-up (imports, loading the model) and 5 rows."""
    walls, peaks = [], []
    env = {**os.environ, "PYTHONPATH": str(tree)}
    for _ in range(repeats):
        Path(out).unlink(missing_ok=True)
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "cadasg_dist.cli", "sample", model_dir, "--n", "5", "--out", out]
        proc = subprocess.Popen(cmd, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        peaks.append(usage.ru_maxrss * 1024)
        if status != 0:
            raise SystemExit(f"cadasg sample ({tree}) failed with status {status}")
    return float(np.median(walls)), float(np.median(peaks))


def baseline_tree(rev: str, into: Path) -> Path:
    """The ``cadasg_dist`` package of revision ``rev``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "cadasg_dist"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def train_model(path: Path) -> None:
    if not path.exists():
        cmd = [sys.executable, "-m", "cadasg_dist.cli", "train", str(DATA), "--target", "whi", "--context", "region",
               "--epochs", "1", "--out", str(path)]
        subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, cwd=ROOT)


def row(name: str, n: int, r: dict, old: dict | None) -> str:
    rate, cpu_rate = n / r["wall"], n / r["cpu"]
    ratio = f"{cpu_rate / (n / old['cpu']):.2f}x" if old else "-"
    return (f"| {name} | {n:,} | {r['wall']:.1f} | {rate:,.0f} | {cpu_rate:,.0f} | {r['peak_rss'] / 2**20:,.0f} | "
            f"{ratio} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a trained model directory (default: HI, 1 epoch, trained once)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big", type=int, default=50_000_000, help="rows of the big file run (0: skip)")
    ap.add_argument("--baseline", default="main", help="git revision of the old path ('' : skip)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each 1M-row measurement (the median is shown)")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.model, args.rows, args.out)
    model = args.model or str(ROOT / "bench" / ".cache" / "sampling_hi_model")
    if args.model is None:
        train_model(Path(model))
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "s.parquet")
        old_tree = baseline_tree(args.baseline, Path(tmp)) if args.baseline else None
        lines = [f"{args.rows:,} rows: the run of median CPU time of {args.repeats}, old and new alternating", "",
                 "| path | rows | wall s | rows/s (wall) | rows/s (CPU) | peak RSS MB | CPU rows/s vs old |",
                 "|---|---|---|---|---|---|---|"]
        old, new = paired(old_tree, "sample", "sample", model, args.rows, out, args.timeout, args.repeats)
        if old:
            lines.append(row("old sample()", args.rows, old, None))
        lines.append(row("sample()", args.rows, new, old))
        old_file, new_file = paired(old_tree, "file_old", "file", model, args.rows, out, args.timeout, args.repeats)
        if old_file:
            lines.append(row("old sample() + write_table (parquet)", args.rows, old_file, None))
        lines.append(row("sample_to_file (parquet)", args.rows, new_file, old_file))
        if args.big:
            lines.append(row("sample_to_file (parquet)", args.big,
                             measure(ROOT, "file", model, args.big, out, args.timeout), None))
        lines += ["", "| path | `cadasg sample MODEL --n 5` wall s (median of 5) | peak RSS MB |", "|---|---|---|"]
        csv = str(Path(tmp) / "five.csv")
        for name, tree in (("old", old_tree), ("new", ROOT)):
            if tree is not None:
                wall, peak = startup(tree, model, csv)
                lines.append(f"| {name} | {wall:.2f} | {peak / 2**20:,.0f} |")
    print(f"model {model}; load average {os.getloadavg()[0]:.1f} at the end")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
