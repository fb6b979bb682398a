"""``cadasg demo``: the bundled German health panel, trained, sampled and evaluated end to end.

Writes ``OUT/model/`` (the artifact), ``OUT/synthetic.parquet`` and ``OUT/report/`` (metrics.json
and report.html), and prints per-context counts real vs synthetic, fidelity numbers and timings.
The demo is explicitly non-private (ε = ∞) so it runs in a few minutes; add ``--epsilon`` to
``cadasg train`` for a private model. It trains on a local Ray (started here, stopped at the end)
with Ray Train and ``num_workers`` workers, each holding a shard of the contexts, as
``cadasg train --num-workers`` does on a cluster; ``--num-workers 0`` trains in this process. An
existing ``OUT/model`` is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cadasg_dist.cli.common import Progress, add_force_flag, add_num_workers_flag, check_num_workers, check_overwrite

if TYPE_CHECKING:  # imported where used: building the ``cadasg`` parser must not load pandas
    import pandas as pd

    from cadasg_dist.config import CADASGConfig
    from cadasg_dist.synthesizer import CADASG

DEMO_TARGET = "hospvis"
DEMO_CONTEXT = ("year", "female")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="train on the bundled table, sample, and write a report")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="where the model, samples and report go")
    add_force_flag(p, "an existing DIR/model")
    p.add_argument("--epochs", type=int, help="override the demo's epochs (default: chosen from the table's size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the model and the samples")
    add_num_workers_flag(p, "Ray Train workers on a local Ray; 0 trains in this process", default=2)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    check_num_workers(args.num_workers)
    check_overwrite(Path(args.out) / "model", args.force, "--out")
    return run_demo(out_dir=Path(args.out), epochs=args.epochs, seed=args.seed or 0, num_workers=args.num_workers)


def demo_config(epochs: int | None = None, seed: int = 0) -> CADASGConfig:
    from cadasg_dist.config import CADASGConfig, ColumnOverride, ContextConfig, DataConfig, TrainConfig

    cfg = CADASGConfig(
        target=DEMO_TARGET,
        # id is the person (never modelled); edlevel1..4 are one-hot copies of edlevel, computed from it
        data=DataConfig(columns={"id": ColumnOverride(kind="identifier"),
                                 **{f"edlevel{i}": ColumnOverride(kind="derived", of="edlevel", equals=i)
                                    for i in range(1, 5)}}),
        context=ContextConfig(columns=DEMO_CONTEXT),
        train=TrainConfig(seed=seed),
    )
    return cfg.replace(**{"train.epochs": epochs}) if epochs else cfg


def split(df: pd.DataFrame, seed: int = 0, train_share: float = 0.8) -> tuple[pd.DataFrame, pd.DataFrame]:
    import numpy as np

    perm = np.random.default_rng(seed).permutation(len(df))
    cut = int(train_share * len(df))
    return df.iloc[perm[:cut]].reset_index(drop=True), df.iloc[perm[cut:]].reset_index(drop=True)


def binarize_target(df: pd.DataFrame) -> pd.DataFrame:
    """The demo's evaluation view: no identifier, and ``hospvis`` as 'any hospital visit'."""
    out = df.drop(columns=[c for c in ("id",) if c in df.columns]).copy()
    out[DEMO_TARGET] = out[DEMO_TARGET] > 0
    return out


def context_table(real: pd.DataFrame, synthetic: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    cols = list(DEMO_CONTEXT)
    r = real.groupby(cols).size().rename("real")
    s = synthetic.groupby(cols).size().rename("synthetic")
    table = pd.concat([r, s], axis=1).fillna(0).astype(int)
    table["real %"] = (100 * table["real"] / table["real"].sum()).round(2)
    table["synthetic %"] = (100 * table["synthetic"] / table["synthetic"].sum()).round(2)
    return table


def run_demo(out_dir: Path, epochs: int | None = None, seed: int = 0, num_workers: int = 2) -> int:
    from cadasg_dist.data.io import write_table
    from cadasg_dist.datasets import load_rwm5yr
    from cadasg_dist.evaluate import evaluate, write_report
    from cadasg_dist.synthesizer import CADASG  # late: torch, only once a demo runs

    check_num_workers(num_workers)
    t0 = time.perf_counter()
    df = load_rwm5yr()
    train, holdout = split(df, seed)
    cfg = demo_config(epochs, seed)
    where = f"Ray Train on a local Ray, {num_workers} workers" if num_workers else "in this process"
    print(f"CA-DASG demo: rwm5yr (German health panel, {len(df)} rows), train {len(train)} / holdout "
          f"{len(holdout)}; target {DEMO_TARGET}, contexts {' x '.join(DEMO_CONTEXT)}; "
          f"{cfg.resolved_epochs(len(train))} epochs, {where}; NOT PRIVATE (ε = ∞, demo only)", flush=True)
    if num_workers:
        model = fit_on_local_ray(cfg, train, num_workers)
    else:
        model = CADASG(cfg).fit(train, progress=Progress())
    fit_s = time.perf_counter() - t0
    model.save(out_dir / "model")
    t1 = time.perf_counter()
    synthetic = model.sample(len(train), seed=seed)
    sample_s = time.perf_counter() - t1
    write_table(synthetic, out_dir / "synthetic.parquet")

    print("\nrows per context (train vs synthetic):")
    print(context_table(train, synthetic).to_string())
    real_rate, syn_rate = (train[DEMO_TARGET] > 0).mean(), (synthetic[DEMO_TARGET] > 0).mean()
    print(f"\nany hospital visit: real {real_rate:.2%}, synthetic {syn_rate:.2%}")

    # Utility is judged on the question the table is used for: did the person visit a hospital?
    holdout_b, train_b, synthetic_b = (binarize_target(t) for t in (holdout, train, synthetic))
    result = evaluate(holdout_b, synthetic_b, target=DEMO_TARGET, context=list(DEMO_CONTEXT), train=train_b,
                      privacy=model.ledger.summary(), seed=seed)
    report = write_report(result, out_dir / "report", real=holdout_b, synthetic=synthetic_b)
    fid, util = result.fidelity, result.utility
    print(f"fidelity: column shape {fid.column_shape:.3f}, pair trend {fid.pair_trend:.3f}, "
          f"worst context {result.per_context.min:.3f}, context-share TV {result.context_frequency_tv:.4f}")
    if util is not None and util.ratio is not None:
        print(f"utility ({util.metric}, train on synthetic vs real, tested on holdout): real {util.real:.3f}, "
              f"synthetic {util.synthetic:.3f}, ratio {util.ratio:.3f}")
    priv = result.privacy
    print(f"privacy checks: exact matches {priv.exact_match_rate:.4f}, closer-to-train share {priv.dcr_share:.3f}, "
          f"membership-inference AUC {priv.mia_auc:.3f}")
    print(f"time: fit {fit_s:.1f}s, sampling {len(synthetic) / max(sample_s, 1e-9):,.0f} rows/s, "
          f"total {time.perf_counter() - t0:.1f}s")
    print(f"model: {out_dir / 'model'}\nreport: {report}")
    return 0


def fit_on_local_ray(cfg: CADASGConfig, train: pd.DataFrame, num_workers: int) -> CADASG:
    """Train with Ray Train on a local Ray (``fit_distributed`` starts it; rank 0's epoch lines come
    through Ray's log relay), and stop the Ray it started."""
    import ray
    import ray.data

    from cadasg_dist.distributed.fit import fit_on_ray

    started = not ray.is_initialized()
    if started:
        print("starting a local Ray ...", flush=True)
        # the demo asks for no GPU: take Ray's coming default and skip its warning about it
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray Data's progress bars and notes for a 16,000-row table put in the object store say nothing
    # here; Ray Train's own lines are filtered in the workers (distributed/worker.py).
    ray.data.DataContext.get_current().enable_progress_bars = False
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    try:
        return fit_on_ray(cfg, train, num_workers=num_workers, on_plan=lambda text: print(text, flush=True))
    finally:
        data_log.setLevel(level)
        if started:
            ray.shutdown()
