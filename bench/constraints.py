"""A band context built the obvious way, with and without the band tie, measured.

SLID with an ``age_band`` column (``"[16, 25)"`` ...) as a context beside ``age`` as a feature: the
share of synthetic rows whose age falls outside their band, the shares of rows the constraint
redrew and repaired, each band's mean age against the real one, and the sampling time, without
DP and at a finite epsilon. ``docs/guides/constraints.md`` cites it.

    .venv/bin/python bench/constraints.py --epochs 20 --epsilons inf,3 --rows 100000
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cadasg_dist.config import CADASGConfig  # noqa: E402
from cadasg_dist.synthesizer import CADASG  # noqa: E402

EDGES = [16, 25, 35, 45, 55, 65, 100]
LABELS = [f"[{a}, {b})" for a, b in zip(EDGES, EDGES[1:])]
# Declared public metadata of a private run (SLID's codebook): categories and bounds, no row read.
DECLARED = {"sex": {"categories": ["Female", "Male"]}, "language": {"categories": ["English", "French", "Other"]},
            "age_band": {"categories": LABELS}, "age": {"min": 16, "max": 99}, "wages": {"min": 0, "max": 60},
            "education": {"min": 0, "max": 25}}


def table() -> pd.DataFrame:
    df = pd.read_csv(ROOT.parent / "shared" / "datasets" / "SLID.csv")
    df["age_band"] = pd.cut(df["age"], EDGES, right=False, labels=LABELS).astype(str)
    return df


def outside(rows: pd.DataFrame) -> float:
    bounds = rows["age_band"].str.extract(r"\[(\d+), (\d+)\)").astype(float)
    return float(((rows["age"] < bounds[0]) | (rows["age"] >= bounds[1])).mean())


def run(df: pd.DataFrame, epsilon: float, tie: bool, epochs: int, rows: int, seed: int) -> dict:
    raw = {"target": "wages", "context": {"columns": ["age_band", "sex"]}, "train": {"epochs": epochs, "seed": seed},
           "privacy": {"epsilon": epsilon}}
    if math.isfinite(epsilon):
        raw["data"] = {"columns": DECLARED}
    if tie:
        raw["constraints"] = [{"kind": "band", "column": "age", "context": "age_band"}]
    model = CADASG(CADASGConfig.from_dict(raw)).fit(df)
    start = time.perf_counter()
    synth = model.sample(rows, seed=seed)
    seconds = time.perf_counter() - start
    stats = model.constraints.stats
    real_mean = df.groupby("age_band")["age"].mean()
    gap = (synth.groupby("age_band")["age"].mean() - real_mean).abs().max()
    return {"epsilon": epsilon, "tie": tie, "outside": outside(synth), "redrawn": stats["redrawn"] / rows,
            "repaired": stats["repaired"] / rows, "max_band_mean_gap": float(gap), "sample_s": seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--epsilons", default="inf,3")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    df = table()
    print("| ε | band tie | rows outside their band | redrawn | repaired | worst band's mean-age gap | sample s |")
    print("|---|---|---|---|---|---|---|")
    for eps in (float(e) for e in args.epsilons.split(",")):
        for tie in (False, True):
            r = run(df, eps, tie, args.epochs, args.rows, args.seed)
            print(f"| {r['epsilon']:g} | {'yes' if tie else 'no'} | {r['outside']:.1%} | {r['redrawn']:.1%} | "
                  f"{r['repaired']:.2%} | {r['max_band_mean_gap']:.1f} years | {r['sample_s']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
