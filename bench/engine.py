"""Engine benchmark: CA-DASG (no DP) against SDV's GaussianCopula, CTGAN and TVAE.

Every generator trains on the same 80/20 split (``bench/splits.py``) and is scored on the same
holdout by ``cadasg_dist.evaluate`` (utility ratio, column shape, pair trend, worst context,
context-share TV, target class rates). Baseline *quality* comes from the cache written by
``bench/baselines.py`` (CTGAN at 300 epochs takes minutes per table here); baseline *speed* is
measured in this run by ``baselines.py --epochs-probe`` (a few CTGAN epochs, extrapolated to 300,
plus a 100k-row sample), so fit and sampling speed are compared as ratios taken side by side.
Any other generator joins as a shell command template (``--command 'python gen.py {train} {out}'
--name X``: train CSV in, synthetic CSV out), run and cached by ``baselines.py``, or, once cached,
with ``--extra X``.

    .venv/bin/python bench/engine.py --tables all --seed 0
    .venv/bin/python bench/engine.py --tables MedExp --epochs 20 --no-probe   # quick look

Prints one markdown table and writes it, with the raw numbers as JSON, to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.splits import load_table, resolve_tables, split  # noqa: E402
from cadasg_dist.config import CADASGConfig, ContextConfig, TrainConfig, parse_overrides  # noqa: E402
from cadasg_dist.evaluate import evaluate  # noqa: E402
from cadasg_dist.synthesizer import CADASG  # noqa: E402

BASELINES = ("gaussian_copula", "ctgan", "tvae")
CACHE = ROOT / "bench" / ".cache"
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
SAMPLE_ROWS = 100_000


def scoring_view(df: pd.DataFrame, spec) -> pd.DataFrame:
    """The table as utility is judged: ``target > 0`` where the spec binarises it, and
    ``log1p(target)`` for a heavy-tailed target (MedExp's raw ``med`` gives a negative R² even when
    the model trains on the real rows, which makes a ratio meaningless)."""
    out = df.copy()
    if spec.binarize_target:
        out[spec.target] = pd.to_numeric(out[spec.target], errors="coerce") > 0
    elif spec.heavy_tail:
        out[spec.target] = np.log1p(pd.to_numeric(out[spec.target], errors="coerce").clip(lower=0))
    return out


def score(name: str, synthetic: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, spec, seed: int) -> dict:
    res = evaluate(scoring_view(test, spec), scoring_view(synthetic[train.columns], spec), target=spec.target,
                   context=list(spec.contexts), train=scoring_view(train, spec), seed=seed)
    rates = res.target_rates or ()
    worst_rate = max((r.relative_error for r in rates if r.relative_error is not None), default=None)
    real_share = train.groupby(list(spec.contexts), dropna=False).size() / len(train)
    syn_share = synthetic.groupby(list(spec.contexts), dropna=False).size() / len(synthetic)
    ctx_tv = 0.5 * real_share.subtract(syn_share, fill_value=0).abs().sum()
    return {
        "model": name,
        "utility_ratio": res.utility.ratio if res.utility else None,
        "utility_real": res.utility.real if res.utility else None,
        "utility_synthetic": res.utility.synthetic if res.utility else None,
        "utility_metric": res.utility.metric if res.utility else None,
        "column_shape": res.fidelity.column_shape,
        "pair_trend": res.fidelity.pair_trend,
        "context_min": res.per_context.min,
        "context_tv_vs_train": float(ctx_tv),
        "target_rate_max_rel_err": worst_rate,
        "exact_match": res.privacy.exact_match_rate,
        "dcr_share": res.privacy.dcr_share,
        "mia_auc": res.privacy.mia_auc,
    }


def average_draws(scores: list[dict]) -> dict:
    """One row for several synthetic draws of a model: the mean of every numeric score (None where
    a draw has none), the first draw's other fields, ``utility_sd`` (the spread between the draws'
    utility ratios; None for one draw) and ``draws``."""
    out = {}
    for key, first in scores[0].items():
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            values = [s[key] for s in scores if s.get(key) is not None]
            out[key] = float(np.mean(values)) if len(values) == len(scores) else None
        else:
            out[key] = first
    utility = [s["utility_ratio"] for s in scores if s.get("utility_ratio") is not None]
    out["utility_sd"] = float(np.std(utility, ddof=1)) if len(utility) > 1 else None
    out["draws"] = len(scores)
    return out


def fit_ours(train: pd.DataFrame, spec, seed: int, epochs: int | None, overrides: dict | None = None
             ) -> tuple[CADASG, float, float]:
    cfg = CADASGConfig(target=spec.target, context=ContextConfig(columns=tuple(spec.contexts)),
                       train=TrainConfig(seed=seed))
    if epochs:
        cfg = cfg.replace(**{"train.epochs": epochs})
    if overrides:
        cfg = cfg.replace(**overrides)
    t0 = time.perf_counter()
    model = CADASG(cfg).fit(train)
    fit_s = time.perf_counter() - t0
    model.sample(1000, seed=seed)  # warm-up
    t0 = time.perf_counter()
    model.sample(SAMPLE_ROWS, seed=seed)
    rate = SAMPLE_ROWS / (time.perf_counter() - t0)
    return model, fit_s, rate


def ctgan_probe(table: str, epochs: int, seed: int) -> dict | None:
    if not BENCH_PY.exists():
        print(f"[engine] no {BENCH_PY}: CTGAN speed not measured (see bench/README.md)", file=sys.stderr)
        return None
    cmd = [str(BENCH_PY), str(ROOT / "bench" / "baselines.py"), "--tables", table, "--epochs-probe", str(epochs),
           "--seed", str(seed), "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        print(f"[engine] CTGAN probe failed: {out.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def cached(table: str, model: str, seed: int) -> tuple[pd.DataFrame, dict] | None:
    d = CACHE / table / model / f"seed{seed}"
    meta_path = d / "meta.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("status") != "ok":
        return None
    return pd.read_parquet(d / "synthetic.parquet"), meta


def run_table(table: str, args: argparse.Namespace) -> list[dict]:
    df, spec = load_table(table)
    train, test = split(df, seed=args.seed)
    print(f"[engine] {table}: {len(train)} train / {len(test)} test rows", file=sys.stderr, flush=True)
    overrides = parse_overrides(args.set)
    model, fit_s, rate = fit_ours(train, spec, args.seed, args.epochs, overrides)
    synthetic = model.sample(len(train), seed=args.seed)
    rows = [{**score("CA-DASG", synthetic, train, test, spec, args.seed), "fit_s": fit_s, "sample_rows_s": rate,
             "epochs": model.config.train.epochs}]
    for name in (*BASELINES, *args.extra):
        hit = cached(table, name, args.seed)
        if hit is None:
            print(f"[engine] {table}/{name}: no cached result (run bench/baselines.py)", file=sys.stderr)
            continue
        syn, meta = hit
        rows.append({**score(name, syn, train, test, spec, args.seed), "fit_s": meta.get("fit_seconds"),
                     "sample_rows_s": meta.get("sample_rows_per_second"), "epochs": meta.get("epochs"),
                     "cached": True})
    if args.probe:
        probe = ctgan_probe(table, args.probe_epochs, args.seed)
        if probe:
            rows.append({"model": "CTGAN speed (this run)", "fit_s": probe["extrapolated_fit_seconds_300_epochs"],
                         "sample_rows_s": probe.get("ctgan_sample_rows_per_second"), "epochs": 300,
                         "probe_epochs": args.probe_epochs})
    for r in rows:
        r["table"] = table
    return rows


def fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"
    return str(v)


def render(rows: list[dict]) -> str:
    cols = ["table", "model", "utility_metric", "utility_real", "utility_synthetic", "utility_ratio", "column_shape",
            "pair_trend", "context_min", "context_tv_vs_train",
            "target_rate_max_rel_err", "exact_match", "fit_s", "sample_rows_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    summary = []
    for table in dict.fromkeys(r["table"] for r in rows):
        ours = next(r for r in rows if r["table"] == table and r["model"] == "CA-DASG")
        speed = next((r for r in rows if r["table"] == table and r["model"].startswith("CTGAN speed")), None)
        if speed and speed.get("fit_s"):
            summary.append(f"{table}: fit time / CTGAN-300 = {ours['fit_s'] / speed['fit_s']:.2f} (goal <= 0.5); "
                           f"sampling rows/s / CTGAN = {ours['sample_rows_s'] / speed['sample_rows_s']:.1f}x "
                           "(goal >= 5x)")
    ratios = [r["utility_ratio"] for r in rows if r["model"] == "CA-DASG" and r.get("utility_ratio") is not None]
    if ratios:
        summary.append(f"CA-DASG mean utility ratio: {np.mean(ratios):.3f} (goal >= 0.97)")
    return "\n".join(lines + [""] + summary)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override CA-DASG's default epochs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="CA-DASG config override")
    p.add_argument("--extra", nargs="*", default=[], help="other cached generators to include")
    p.add_argument("--command", metavar="TEMPLATE",
                   help="one more generator as a shell command: {train} CSV in, {out} CSV out ({rows}, {seed})")
    p.add_argument("--name", help="name of the --command generator (its cache folder and table row)")
    p.add_argument("--probe-epochs", type=int, default=3)
    p.add_argument("--no-probe", dest="probe", action="store_false", help="skip the CTGAN speed probe")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    if args.command:
        if not args.name:
            p.error("--command needs --name")
        cmd = [sys.executable, str(ROOT / "bench" / "baselines.py"), "--tables", args.tables, "--command",
               args.command, "--name", args.name, "--seed", str(args.seed)]
        subprocess.run(cmd, cwd=ROOT, check=True)  # fits and caches it like the SDV baselines
        args.extra = [*args.extra, args.name]
    rows = [r for t in resolve_tables(args.tables) for r in run_table(t, args)]
    text = render(rows)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"engine_seed{args.seed}.md").write_text(text + "\n")
    (out / f"engine_seed{args.seed}.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
