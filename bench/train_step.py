"""Training-step benchmark: ms per ``train_step`` and rows/s at several batch sizes, non-private and
private (DP-SGD: per-sample gradients and the gradient penalty's double backward), for this tree
and an old revision (``--baseline``) in the same run, with the ratio.

Each (revision, mode) runs in its own process pinned to one core (``taskset -c 0`` where
available) with one torch thread. The process prepares the table at each batch size and trains
through the ordinary ``fit`` path until the first step, whose arguments (config, state, batch,
cache) it keeps: it then times ``--warmup`` + ``--steps`` calls of ``train_step`` on that batch
and stops. Times are the process's CPU time per step (on a shared machine the wall clock also
counts waiting for the core) and the median of the per-step times; the load average is printed.
A private batch is a Poisson draw, so its rows are counted, not assumed.

    .venv/bin/python bench/train_step.py                                   # HI, 500..4000, old = main
    .venv/bin/python bench/train_step.py --data rwm5yr.csv --target outwork --context female --baseline HEAD~3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "HI.csv"
PRIVATE_EPSILON = 3.0


class _Done(Exception):
    """Raised by the timed step to stop ``fit`` once the steps are measured."""


def child(data: str, target: str, context: str, sizes: list[int], private: bool, warmup: int, steps: int) -> None:
    """Time ``train_step`` at each batch size in this process; print one JSON line per size."""
    import torch

    torch.set_num_threads(1)
    import cadasg_dist.train.loop as loop
    from cadasg_dist.config import CADASGConfig
    from cadasg_dist.data.codebook import Codebook
    from cadasg_dist.data.io import read_table
    from cadasg_dist.synthesizer import CADASG

    df = read_table(data)
    step = loop.train_step
    for size in sizes:
        found: dict[str, float] = {}

        def timed(cfg, state, batch, cache, found=found):  # noqa: ANN001, ANN202
            for _ in range(warmup):
                step(cfg, state, batch, cache)
            cpu, wall = [], []
            for _ in range(steps):
                c, w = time.process_time(), time.perf_counter()
                step(cfg, state, batch, cache)
                cpu.append(time.process_time() - c)
                wall.append(time.perf_counter() - w)
            found.update(rows=len(batch.x), cpu_ms=1e3 * statistics.median(cpu), wall_ms=1e3 * statistics.median(wall))
            raise _Done

        loop.train_step = timed
        over = {"train.batch_size": size, "train.epochs": 1, "train.seed": 0}
        if private:
            over["privacy.epsilon"] = PRIVATE_EPSILON
        model = CADASG(CADASGConfig().replace(**over))
        # a private run needs public category sets: read from the table here (a timing run, no guarantee claimed)
        codebook = Codebook.detect(df) if private else None
        try:
            model.fit_prepared(model.prepare(df, context=[context], target=target, codebook=codebook))
        except _Done:
            pass
        print(json.dumps({"size": size, **found}), flush=True)


def measure(tree: Path, args: argparse.Namespace, private: bool) -> dict[int, dict]:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [*pin, sys.executable, str(ROOT / "bench" / "train_step.py"), "--child", "--data", args.data,
           "--target", args.target, "--context", args.context, "--sizes", *map(str, args.sizes),
           "--warmup", str(args.warmup), "--steps", str(args.steps), *(["--private"] if private else [])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{'private' if private else 'non-private'} ({tree}) failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {r["size"]: r for r in lines}


def baseline_tree(rev: str, into: Path) -> Path:
    """The ``cadasg_dist`` package of revision ``rev``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "cadasg_dist"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def table(results: dict[str, dict[int, dict]], old: dict[str, dict[int, dict]] | None) -> list[str]:
    lines = ["| mode | batch | rows | old ms/step | ms/step | old rows/s | rows/s | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, by_size in results.items():
        for size, r in by_size.items():
            o = old[mode][size] if old else None
            rate = r["rows"] / r["cpu_ms"] * 1e3
            old_ms = f"{o['cpu_ms']:.1f}" if o else "-"
            old_rate = f"{o['rows'] / o['cpu_ms'] * 1e3:,.0f}" if o else "-"
            # per row, so a private batch of a different Poisson size compares fairly
            ratio = f"{(o['cpu_ms'] / o['rows']) / (r['cpu_ms'] / r['rows']):.2f}x" if o else "-"
            lines.append(f"| {mode} | {size:,} | {r['rows']:,} | {old_ms} | {r['cpu_ms']:.1f} | {old_rate} | "
                         f"{rate:,.0f} | {ratio} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--target", default="whi")
    ap.add_argument("--context", default="region")
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    ap.add_argument("--modes", nargs="+", choices=["non-private", "private"], default=["non-private", "private"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--baseline", default="main", help="git revision of the old path ('': skip)")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--private", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.data, args.target, args.context, args.sizes, args.private, args.warmup, args.steps)
    print("uptime at the start:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = baseline_tree(args.baseline, Path(tmp)) if args.baseline else None
        old, new = ({}, {}) if old_tree else (None, {})
        for mode in args.modes:  # old then new, mode by mode: the two see the same load
            if old is not None:
                old[mode] = measure(old_tree, args, mode == "private")
            new[mode] = measure(ROOT, args, mode == "private")
    print("uptime at the end:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"data {args.data}; CPU ms per step (median of {args.steps}), one core, one torch thread")
    print("\n".join(table(new, old)))


if __name__ == "__main__":
    main()
