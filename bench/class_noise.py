"""What the class histograms' DP noise costs a fitted model: fresh releases on saved bench fits.

    .venv/bin/python bench/class_noise.py --table rwm5yr --epsilon 1 --scales 1,0.707,0.577 --draws 6

Every CA-DASG fit that ``bench/privacy.py`` cached under ``bench/.cache/{table}/cadasg_eps{ε}/``
(``--match`` filters the slot names) keeps its model. This script takes each model as it is
(networks, cache, the other releases) and swaps only its ``preprocess/class_marginals`` release
(``DataTransformer.class_marginals``, the per-stratum histograms the per-class calibration reads):

* ``own``: the release the fit made;
* ``exact``: the exact counts of the training rows (no noise: the ceiling of any better estimate);
* ``scale S``: the exact counts plus ``--draws`` fresh Gaussian draws of S times the release's sd
  (S = 1: as noisy as the fit's own; S = 1/sqrt(2): the sd a doubled ``class_marginals_share``
  gives). The draws are the same across scales (paired), so a scale's gain is measured on equal
  noise directions.

Each release is scored by the utility ratio of ``bench/privacy.py`` (train on synthetic, test on
the real holdout, over train on real), on ``--samples`` synthetic tables of the training table's
size (seeds 100, 101, ...), averaged; the downstream model's seed is 0 for every fit (the bench
uses the split's seed), so a fit's figures here can differ a little from its bench score.

It is an off-line study: reading the exact counts and scoring on the holdout both use real rows,
and nothing here is a release.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import CACHE, scoring_view  # noqa: E402
from bench.splits import load_table, split  # noqa: E402
from cadasg_dist.data.schema import infer_schema  # noqa: E402
from cadasg_dist.evaluate.utility import measure_utility  # noqa: E402
from cadasg_dist.model.histograms import class_counts  # noqa: E402
from cadasg_dist.private.releases import value_resolution  # noqa: E402
from cadasg_dist.synthesizer import CADASG  # noqa: E402


def log(msg: str) -> None:
    print(f"[class_noise {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def training_rows(model: CADASG, train: pd.DataFrame) -> pd.DataFrame:
    """The training table as the fit encoded it: numeric values clipped to the released bounds
    (a coded categorical's to its first and last category), identifier and derived columns out."""
    out = train[[c.name for c in model.schema.columns if c.kind not in ("identifier", "derived")]].copy()
    for col in model.schema.columns:
        if col.name not in out:
            continue
        if col.categories is None and col.min is not None:
            out[col.name] = out[col.name].clip(col.min, col.max)
        elif col.categories and all(isinstance(v, (int, np.integer)) for v in col.categories):
            out[col.name] = out[col.name].clip(min(col.categories), max(col.categories))
    return out


def exact_class_counts(model: CADASG, train: pd.DataFrame) -> dict[str, np.ndarray]:
    """``class_counts`` of the training rows, with the tie resolution the private preparation used."""
    bins = model.config.privacy.histogram_bins
    resolution = {c.name: value_resolution(SimpleNamespace(lo=c.min, hi=c.max, kind=c.kind), bins)
                  for c in model.schema.columns if c.categories is None and c.min is not None}
    x = model.transformer.encode(training_rows(model, train), seed=0)
    return class_counts(x, model.transformer, model.nets.dims, resolution)


def utility(model: CADASG, train: pd.DataFrame, fit_real: pd.DataFrame, real: pd.DataFrame, kinds: dict[str, str],
            spec, samples: int) -> float:
    """Mean utility ratio over ``samples`` synthetic tables (seeds 100, 101, ...); ``fit_real`` and
    ``real`` are the training rows and the holdout as scored (``scoring_view``)."""
    ratios = []
    for s in range(samples):
        syn = scoring_view(model.sample(len(train), seed=100 + s)[train.columns], spec)
        res = measure_utility(fit_real, syn, real, target=spec.target, kinds=kinds,
                              test_cells=np.zeros(len(real), dtype=int), cell_keys=[{}], seed=0,
                              max_rows=20000, baseline="train")
        ratios.append(res.ratio)
    return float(np.mean(ratios))


def study(model_dir: Path, df: pd.DataFrame, spec, scales: list[float], draws: int, samples: int) -> dict:
    seed = int(re.match(r"seed(\d+)_", model_dir.name).group(1))
    train, test = split(df, seed=seed)
    model = CADASG.load(model_dir / "model")
    own = model.transformer.class_marginals
    if not own or not own.get("std"):
        raise SystemExit(f"{model_dir}: no private class histograms (a fit at epsilon <= 3 with the per-class "
                         "calibration on has them)")
    exact = exact_class_counts(model, train)
    real, fit_real = scoring_view(test, spec), scoring_view(train, spec)  # once per fit, not per release
    kinds = {c.name: c.kind for c in infer_schema(real).columns}
    std = float(own["std"])
    rng = np.random.default_rng(seed)
    noise = [{k: rng.normal(0.0, std, v.shape) for k, v in exact.items()} for _ in range(draws)]

    def score(release: dict) -> float:
        model.transformer.class_marginals = release
        model._calibration = None  # refitted from the swapped release on the next sample
        return utility(model, train, fit_real, real, kinds, spec, samples)

    row = {"fit": model_dir.name, "own": score(own),
           "exact": score({"std": 0.0, "counts": {k: v.tolist() for k, v in exact.items()}})}
    for s in scales:
        row[f"scale {s:g}"] = float(np.mean([score({"std": std * s, "counts": {k: (v + s * n[k]).tolist()
                                                                             for k, v in exact.items()}})
                                             for n in noise]))
    log(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else str(v) for k, v in row.items()))
    return row


def positive_floats(text: str) -> list[float]:
    """``--scales``: comma-separated numbers > 0."""
    try:
        values = [float(s) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected numbers > 0, got {text!r}")
    return values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="rwm5yr")
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--match", default="", help="only the cached fits whose slot name contains one of these "
                                                "(comma-separated)")
    ap.add_argument("--scales", type=positive_floats, default="1",
                    help="noise sd multiples of the fit's own release, comma-separated")
    ap.add_argument("--draws", type=int, default=6, help="fresh noise draws per scale")
    ap.add_argument("--samples", type=int, default=2, help="synthetic tables scored per release")
    args = ap.parse_args()
    if args.draws < 1 or args.samples < 1:
        ap.error(f"--draws and --samples must be >= 1, got {args.draws} and {args.samples}")
    root = CACHE / args.table / f"cadasg_eps{args.epsilon:g}"
    patterns = args.match.split(",")
    fits = sorted(d for d in root.glob("seed*") if (d / "model").is_dir() and any(p in d.name for p in patterns))
    if not fits:
        ap.error(f"no cached fits under {root} matching {args.match!r}; run bench/privacy.py first")
    import torch

    torch.set_num_threads(1)
    df, spec = load_table(args.table)
    with threadpool_limits(limits=1):  # like the bench's fits: one thread each, no oversubscription
        rows = [study(d, df, spec, args.scales, args.draws, args.samples) for d in fits]
    cols = [k for k in rows[0] if k != "fit"]
    lines = ["| fit | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {r['fit']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |" for r in rows]
    lines.append("| mean | " + " | ".join(f"{np.mean([r[c] for r in rows]):.3f}" for c in cols) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
