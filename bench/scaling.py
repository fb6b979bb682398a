"""Scaling benchmark: rows/s of the in-process fit vs Ray Train with 1 and 2 workers, Ray's overhead,
the bytes each step communicates, and the quality of the 2-worker model against the 1-worker one.

    .venv/bin/python bench/scaling.py --table HI --epochs 8            # about 6 minutes on 2 cores
    .venv/bin/python bench/scaling.py --table HI --epochs 8 --no-quality

Runs, on the 80 % training split of the table (``bench/splits.py``), at the default model size
(compute-bound on CPU: 128-wide networks, batch 500, one torch thread per process):

* ``inproc``: ``prepare`` + ``fit_local`` in this process (what ``CADASG.fit`` does);
* ``ray1`` / ``ray2``: ``fit_distributed`` with 1 / 2 Ray Train workers on a local Ray with 2 CPUs.

Reported: training rows/s (rows x epochs / seconds of the epoch loop, from the workers' own
timers), wall seconds end to end, speed-up ray2 vs ray1 and vs inproc, Ray's overhead at one
worker against the in-process fit, the per-step payload each worker hands to all-reduce, and (with
quality on) utility ratio / column shape / pair trend of inproc, a second in-process seed (the
seed-to-seed spread that a 1 % goal has to be read against) and ray2. Prints markdown and writes
it with the raw numbers to bench/results/scaling_<table>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import score  # noqa: E402
from bench.splits import load_table, split  # noqa: E402
from cadasg_dist.config import CADASGConfig, ContextConfig, TrainConfig  # noqa: E402
from cadasg_dist.privacy.ledger import PrivacyLedger  # noqa: E402
from cadasg_dist.synthesizer import CADASG  # noqa: E402
from cadasg_dist.train.fit import fit_local  # noqa: E402

RESULTS = ROOT / "bench" / "results"


SETTINGS: dict = {}  # --batch-size / --hidden overrides, shared by every run


def config(spec, epochs: int, seed: int, workers: int = 1, storage: str | None = None) -> CADASGConfig:
    cfg = CADASGConfig(target=spec.target, context=ContextConfig(columns=tuple(spec.contexts)),
                       train=TrainConfig(epochs=epochs, seed=seed))
    return cfg.replace(**{"distributed.num_workers": workers, "distributed.storage_path": storage,
                          "distributed.max_failures": 0, **SETTINGS})


def run_inproc(train, spec, epochs: int, seed: int) -> dict:
    t0 = time.perf_counter()
    model = CADASG(config(spec, epochs, seed))
    prepared = model.prepare(train)
    x, ids, dims = prepared.x, prepared.ids, prepared.dims
    marks: list[float] = []  # cumulative seconds at each epoch's end
    cpu = [time.process_time()]  # CPU seconds of this process at each epoch's end

    def mark(report) -> None:
        marks.append(report.seconds)
        cpu.append(time.process_time())

    state, cache = fit_local(model.config, x, ids, dims, progress=mark)
    t2 = time.perf_counter()
    model.assemble(state.nets, cache, state.history, ledger=PrivacyLedger.non_private(), seconds=t2 - t0, rows=len(x))
    epoch_s = list(np.diff([0.0, *marks]))
    return {"model": model, "train_s": float(sum(epoch_s)), "wall_s": t2 - t0, "rows": len(x), "epochs": epochs,
            "epoch_s": epoch_s, "epoch_cpu_s": list(np.diff(cpu))}


def run_ray(train, spec, epochs: int, seed: int, workers: int, storage: str) -> dict:
    from cadasg_dist.distributed.trainer import fit_distributed

    t0 = time.perf_counter()
    model = fit_distributed(CADASG(config(spec, epochs, seed, workers, storage)), train)
    wall = time.perf_counter() - t0
    meta = model.meta["distributed"]
    timing = meta["timing"]
    return {"model": model, "train_s": float(sum(timing["epoch_s"])), "wall_s": wall, "rows": len(train),
            "epochs": epochs, "load_s": timing["load_s"], "epoch_s": timing["epoch_s"],
            "epoch_cpu_s": timing["epoch_cpu_s"],
            "bytes_per_step": meta["bytes_per_step"],
            "collectives_per_step": meta["collectives_per_step"], "plan": meta["plan"],
            "comm_seconds_per_step": meta.get("comm_seconds_per_step", {}), "timing": timing}


def quality(name: str, model: CADASG, train, test, spec, seed: int) -> dict:
    synthetic = model.sample(len(train), seed=seed)
    out = score(name, synthetic, train, test, spec, seed)
    return {k: out[k] for k in ("utility_ratio", "column_shape", "pair_trend", "context_tv_vs_train")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="HI")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--batch-size", type=int, help="global batch (default: the engine's, 500)")
    ap.add_argument("--hidden", help="width of generator and critic blocks, e.g. 128,128")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only in-process vs 1 Ray worker, end to end (Ray start-up included): the 5-minute goal")
    ap.add_argument("--storage", default=str(ROOT / "bench" / ".cache" / "ray_results"))
    ap.add_argument("--rows", type=int, help="large-table mode (bench/scaling_rows.py): HI resampled to this many rows")
    ap.add_argument("--modes", default="inproc,ray1,ray2", help="with --rows: which runs, in order")
    ap.add_argument("--sample-rows", type=int, default=1_000_000, help="with --rows: rows sampled (0: none)")
    args = ap.parse_args()
    if args.rows:
        from bench.scaling_rows import main_rows

        main_rows(args.rows, args.epochs, args.modes.split(","), args.sample_rows, args.batch_size or 0)
        return
    if args.batch_size:
        SETTINGS["train.batch_size"] = args.batch_size
    if args.hidden:
        SETTINGS["model.hidden"] = SETTINGS["model.critic_hidden"] = [int(h) for h in args.hidden.split(",")]
    torch.set_num_threads(1)
    import ray

    df, spec = load_table(args.table)
    train, test = split(df, seed=args.seed)
    if args.overhead_only:
        overhead(train, spec, args)
        return
    load0 = os.getloadavg()
    # In-process before and after the Ray runs: on a shared machine the load drifts during a run.
    runs = {"inproc": run_inproc(train, spec, args.epochs, args.seed)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    for workers in (1, 2):
        runs[f"ray{workers}"] = run_ray(train, spec, args.epochs, args.seed, workers, args.storage)
    ray.shutdown()
    runs["inproc_again"] = run_inproc(train, spec, args.epochs, args.seed + 1)
    load1 = os.getloadavg()
    for r in runs.values():
        # Steady-state throughput: the median epoch (a load spike from other jobs hits a few epochs).
        r["median_epoch_s"] = float(np.median(r["epoch_s"]))
        r["rows_per_s"] = r["rows"] / r["median_epoch_s"]
        r["median_epoch_cpu_s"] = float(np.median(r["epoch_cpu_s"]))  # rank 0's process for the Ray runs
    inproc, ray1, ray2 = runs["inproc"], runs["ray1"], runs["ray2"]
    inproc_epoch = float(np.median([runs["inproc"]["median_epoch_s"], runs["inproc_again"]["median_epoch_s"]]))
    # Fixed cost of a Ray run (start-up, shard read, checkpoints, final pass) over the in-process one,
    # and what it would be on a 5-minute in-process fit at the measured loop speeds.
    fixed = (ray1["wall_s"] - ray1["train_s"]) - (inproc["wall_s"] - inproc["train_s"])
    # The loop's cost in CPU seconds (wall seconds swing with the other jobs on a shared host).
    inproc_cpu = float(np.median([runs["inproc"]["median_epoch_cpu_s"], runs["inproc_again"]["median_epoch_cpu_s"]]))
    loop_ratio = ray1["median_epoch_cpu_s"] / inproc_cpu
    summary = {
        "table": args.table, "rows": len(train), "epochs": args.epochs, "cpus": os.cpu_count(),
        "loadavg_before": load0, "loadavg_after": load1,
        "rows_per_s": {k: r["rows_per_s"] for k, r in runs.items()},
        "median_epoch_s": {k: r["median_epoch_s"] for k, r in runs.items()},
        "median_epoch_cpu_s": {k: r["median_epoch_cpu_s"] for k, r in runs.items()},
        # With a core per worker and nothing else running, an epoch takes about a worker's CPU time:
        # this ratio is the speed-up the host's other jobs hide from the wall-clock numbers.
        "speedup_ray2_vs_ray1_cpu": ray1["median_epoch_cpu_s"] / ray2["median_epoch_cpu_s"],
        "epoch_s": {k: r["epoch_s"] for k, r in runs.items()},
        "train_s": {k: r["train_s"] for k, r in runs.items()},
        "wall_s": {k: r["wall_s"] for k, r in runs.items()},
        "speedup_ray2_vs_ray1_train": ray2["rows_per_s"] / ray1["rows_per_s"],
        "speedup_ray2_vs_inproc_train": inproc_epoch / ray2["median_epoch_s"],
        "speedup_ray2_vs_ray1_wall": ray1["wall_s"] / ray2["wall_s"],
        "ray_overhead_1worker_wall": ray1["wall_s"] / inproc["wall_s"] - 1,
        "ray_overhead_1worker_train": ray1["median_epoch_s"] / inproc_epoch - 1,
        "ray_overhead_1worker_train_cpu": loop_ratio - 1,
        "ray_fixed_overhead_s": fixed,
        "ray_overhead_1worker_5min_projected": (fixed + loop_ratio * 300.0) / 300.0 - 1,
        "bytes_per_step_2workers": ray2["bytes_per_step"],
        "collectives_per_step_2workers": ray2["collectives_per_step"],
        "comm_seconds_per_step_2workers": ray2["comm_seconds_per_step"],
        "settings": dict(SETTINGS),
        "step_seconds_2workers": ray2["median_epoch_s"] / -(-ray2["rows"] // config(spec, 1, 0).train.batch_size),
        "plan_2workers": ray2["plan"],
        "ray1_timing": {k: v for k, v in ray1["timing"].items() if not isinstance(v, list)},
    }
    if not args.no_quality:
        summary["quality"] = {
            "inproc": quality("inproc", inproc["model"], train, test, spec, args.seed),
            "inproc_seed+1": quality("inproc_seed+1", runs["inproc_again"]["model"], train, test, spec, args.seed),
            "ray2": quality("ray2", ray2["model"], train, test, spec, args.seed),
        }
    text = render(summary)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = args.table + (f"_b{args.batch_size}" if args.batch_size else "") + (
        f"_h{args.hidden.replace(',', 'x')}" if args.hidden else "")
    (RESULTS / f"scaling_{tag}.md").write_text(text + "\n")
    (RESULTS / f"scaling_{tag}.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")


def overhead(train, spec, args) -> None:
    """Wall seconds end to end of the in-process fit and of a 1-worker Ray run of the same epochs,
    the Ray run including ``ray.init`` and ``ray.shutdown`` (what ``cadasg train --num-workers 1``
    adds); in-process runs before and after, to read the Ray run against their mean."""
    import ray

    load0 = os.getloadavg()
    walls = {"inproc": run_inproc(train, spec, args.epochs, args.seed)["wall_s"]}
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray1 = run_ray(train, spec, args.epochs, args.seed, 1, args.storage)
    ray.shutdown()
    walls["ray1"] = time.perf_counter() - t0
    walls["inproc_again"] = run_inproc(train, spec, args.epochs, args.seed)["wall_s"]
    base = (walls["inproc"] + walls["inproc_again"]) / 2
    out = {"table": args.table, "rows": len(train), "epochs": args.epochs, "settings": dict(SETTINGS),
           "loadavg_before": load0, "loadavg_after": os.getloadavg(), "wall_s": walls,
           "ray1_train_s": ray1["train_s"], "ray1_overhead": walls["ray1"] / base - 1}
    text = "\n".join([
        f"## Ray overhead on {args.table} ({len(train)} rows, {args.epochs} epochs, "
        f"{', '.join(f'{k}={v}' for k, v in SETTINGS.items()) or 'engine defaults'}; load average "
        f"{load0[0]:.1f} before, {out['loadavg_after'][0]:.1f} after)", "",
        "| run | wall s (end to end) |", "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in walls.items()), "",
        f"- 1 Ray worker vs the mean in-process fit: {100 * out['ray1_overhead']:+.1f}% wall "
        f"(Ray start-up and shutdown included; its training loop took {ray1['train_s']:.1f} s)"])
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scaling_{args.table}_overhead.md").write_text(text + "\n")
    (RESULTS / f"scaling_{args.table}_overhead.json").write_text(json.dumps(out, indent=1, default=float) + "\n")


def render(s: dict) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in s["settings"].items()) or "engine defaults"
    lines = [f"## Scaling on {s['table']} ({s['rows']} training rows, {s['epochs']} epochs, {settings}, "
             f"{s['cpus']} CPUs; load average {s['loadavg_before'][0]:.1f} before, "
             f"{s['loadavg_after'][0]:.1f} after)", "",
             "| run | rows/s (median epoch) | median epoch s | median epoch CPU s | epochs s (sum) | wall s |",
             "|---|---|---|---|---|---|"]
    for k in ("inproc", "ray1", "ray2", "inproc_again"):
        lines.append(f"| {k} | {s['rows_per_s'][k]:,.0f} | {s['median_epoch_s'][k]:.2f} | "
                     f"{s['median_epoch_cpu_s'][k]:.2f} | {s['train_s'][k]:.1f} | {s['wall_s'][k]:.1f} |")
    lines += ["",
              f"- speed-up, 2 vs 1 Ray worker: {s['speedup_ray2_vs_ray1_train']:.2f}x (training loop), "
              f"{s['speedup_ray2_vs_ray1_wall']:.2f}x (wall), {s['speedup_ray2_vs_ray1_cpu']:.2f}x in CPU time per "
              "epoch of a worker (what a core per worker would give)",
              f"- speed-up, 2 Ray workers vs in-process: {s['speedup_ray2_vs_inproc_train']:.2f}x (training loop)",
              f"- Ray overhead at 1 worker vs in-process fit: {100 * s['ray_overhead_1worker_wall']:+.1f}% wall on "
              f"this run; in the training loop {100 * s['ray_overhead_1worker_train']:+.1f}% wall, "
              f"{100 * s['ray_overhead_1worker_train_cpu']:+.1f}% CPU; {s['ray_fixed_overhead_s']:.1f} s fixed; "
              f"projected on a 5-minute fit (fixed + CPU loop ratio): "
              f"{100 * s['ray_overhead_1worker_5min_projected']:+.1f}%",
              "- where the fixed cost of the 1-worker Ray run goes (s): " + ", ".join(
                  f"{k} {v:.1f}" for k, v in s["ray1_timing"].items()),
              "- per step, each of 2 workers hands all-reduce: " + ", ".join(
                  f"{k} {v / 1024:,.1f} KiB ({s['collectives_per_step_2workers'][k]:.2f} calls)"
                  for k, v in s["bytes_per_step_2workers"].items()),
              f"- per step at 2 workers: {1000 * s['step_seconds_2workers']:.1f} ms, of which "
              f"{1000 * sum(s['comm_seconds_per_step_2workers'].values()):.1f} ms inside all-reduce "
              "(waiting for the slower worker included)"]
    if "quality" in s:
        lines += ["", "| model | utility ratio | column shape | pair trend | context TV |", "|---|---|---|---|---|"]
        for k, q in s["quality"].items():
            lines.append(f"| {k} | {q['utility_ratio']:.4f} | {q['column_shape']:.4f} | {q['pair_trend']:.4f} | "
                         f"{q['context_tv_vs_train']:.4f} |")
        base, two = s["quality"]["inproc"], s["quality"]["ray2"]
        rel = {k: (two[k] - base[k]) / base[k] for k in ("utility_ratio", "column_shape", "pair_trend")}
        lines.append("")
        lines.append("- ray2 vs inproc (relative): " + ", ".join(f"{k} {100 * v:+.2f}%" for k, v in rel.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
