"""smartnoise-synth's MST and AIM as DP baselines: train CSV in, synthetic CSV out.

Runs in the baseline environment (``.venv-bench``, see bench/requirements-bench.txt), called by
``bench/privacy.py`` through ``bench/baselines.py --command``:

    .venv-bench/bin/python bench/dp_baselines.py --synth mst --epsilon 3 --delta 1e-5 TRAIN.csv OUT.csv

Preprocessing, as smartnoise does it by default, and its privacy: continuous columns are cut into
``--bins`` equal-width bins between bounds that smartnoise estimates with ``preprocessor_eps``
(10% of ε here; smartnoise takes it out of the ε it is given, so the total is ε); the category sets
of categorical columns are read from the data *without* a DP mechanism (smartnoise's behaviour:
this favours the baselines, since their ε does not cover it). Integer columns with at most
``--max-categories`` distinct values are treated as categories, other numbers as continuous.
Binned values come back as their bin's midpoint. AIM runs ``--rounds-per-column`` x
columns rounds (2 by default, against smartnoise's 16: with 16 one fit ran past 20 minutes on this
2-core machine); fewer rounds give each round more of the budget, the total stays ε.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd


def kinds(df: pd.DataFrame, max_categories: int) -> tuple[list[str], list[str]]:
    categorical, continuous = [], []
    for col in df.columns:
        s = df[col]
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if numeric and s.nunique(dropna=True) > max_categories:
            continuous.append(col)
        else:
            categorical.append(col)
    return categorical, continuous


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", choices=("mst", "aim"), required=True)
    ap.add_argument("--epsilon", type=float, required=True)
    ap.add_argument("--delta", type=float, required=True)
    ap.add_argument("--bins", type=int, default=20)
    ap.add_argument("--max-categories", type=int, default=30)
    ap.add_argument("--preprocessor-share", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds-per-column", type=int, default=2,
                    help="AIM's rounds = this x columns (smartnoise's default is 16: over 20 minutes a fit here)")
    ap.add_argument("train")
    ap.add_argument("out")
    args = ap.parse_args()

    import random

    from snsynth import Synthesizer
    from snsynth.transform import BinTransformer, LabelTransformer, TableTransformer

    np.random.seed(args.seed)
    random.seed(args.seed)
    df = pd.read_csv(args.train)
    categorical, continuous = kinds(df, args.max_categories)
    data = df.copy()
    for col in categorical:  # one label space per column; missing is its own label
        data[col] = data[col].astype(object).where(data[col].notna(), "__missing__").astype(str)
    pre_eps = args.preprocessor_share * args.epsilon  # of the total ε
    transforms = [LabelTransformer(nullable=False) if c in categorical
                  else BinTransformer(bins=args.bins, nullable=bool(data[c].isna().any())) for c in data.columns]
    transformer = TableTransformer(transforms)
    extra = {"rounds": args.rounds_per_column * len(data.columns)} if args.synth == "aim" else {}
    # smartnoise takes preprocessor_eps out of epsilon itself: the total is args.epsilon
    synth = Synthesizer.create(args.synth, epsilon=args.epsilon, delta=args.delta, verbose=False, **extra)
    t0 = time.perf_counter()
    synth.fit(data, transformer=transformer, preprocessor_eps=pre_eps)
    fit_s = time.perf_counter() - t0
    out = synth.sample(len(df))
    for col in categorical:
        values = out[col].astype(str)
        original = df[col]
        mapped = values.where(values != "__missing__")
        if pd.api.types.is_numeric_dtype(original) and not pd.api.types.is_bool_dtype(original):
            mapped = pd.to_numeric(mapped, errors="coerce")
        elif pd.api.types.is_bool_dtype(original):
            mapped = mapped.map({"True": True, "False": False})
        out[col] = mapped
    for col in continuous:
        if pd.api.types.is_integer_dtype(df[col]):
            out[col] = pd.to_numeric(out[col], errors="coerce").round()
    out[df.columns].to_csv(args.out, index=False)
    print(f"{args.synth} eps={args.epsilon} fit {fit_s:.1f}s, {len(out)} rows, "
          f"{len(categorical)} categorical / {len(continuous)} continuous columns", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
