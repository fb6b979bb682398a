"""Which continuous encoding? Gaussian quantile map vs affine standardisation, measured.

Trains CA-DASG with each encoding (everything else equal) on the same split and prints column
shape, pair trend and the utility ratio per table. ``cadasg_dist/data/continuous.py`` cites this.

    .venv/bin/python bench/encodings.py --tables MedExp,SLID --epochs 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import score  # noqa: E402
from bench.splits import load_table, resolve_tables, split  # noqa: E402
from cadasg_dist.config import CADASGConfig, ContextConfig, TrainConfig  # noqa: E402
from cadasg_dist.synthesizer import CADASG  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default="MedExp,SLID")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print("| table | encoding | column_shape | pair_trend | context_min | utility_ratio |")
    print("|---|---|---|---|---|---|")
    for table in resolve_tables(args.tables):
        df, spec = load_table(table)
        train, test = split(df, seed=args.seed)
        for encoding in ("quantile", "standard"):
            cfg = CADASGConfig(target=spec.target, context=ContextConfig(columns=tuple(spec.contexts)),
                               train=TrainConfig(epochs=args.epochs, seed=args.seed))
            cfg = cfg.replace(**{"data.continuous_encoding": encoding})
            model = CADASG(cfg).fit(train)
            r = score(encoding, model.sample(len(train), seed=args.seed), train, test, spec, args.seed)
            print(f"| {table} | {encoding} | {r['column_shape']:.3f} | {r['pair_trend']:.3f} | "
                  f"{r['context_min']:.3f} | {r['utility_ratio']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
