"""The main job as a new user does it: a private release of a table from its drafted codebook and
``--epsilon`` alone, scored beside the DP baselines cached by ``bench/privacy.py``.

    .venv/bin/python bench/private_release.py --tables MedExp,SLID,rwm5yr,HI,diamonds --epsilons 1,3

For each table (the 80/20 split of ``bench/splits.py``) and each ε:

1. ``cadasg schema train.csv --out codebook.yaml --target T --context C`` drafts the codebook;
   its kinds and category sets are kept as the owner would confirm them and its bounds removed (a
   private run then releases them under its budget); identifiers are dropped by ``load_table``;
2. ``cadasg train train.csv --codebook codebook.yaml --target T --context C --epsilon E`` with no
   other setting: the private profile picks batch, epochs, network sizes and clips;
3. ``cadasg sample`` as many rows as the training split, scored on the holdout with
   ``bench.engine.score`` (utility ratio, worst context's fidelity, column shape), ``--draws``
   samples averaged; the fit's wall time is reported beside it.

Baselines (MST, AIM, the DP-GAN) in the same run, on the same split and at the same ε, with
``bench/privacy.py``'s commands and δ = min(1e-5, 1/n²): read from
``bench/.cache/{table}/{name}_eps{ε}[_derived]/`` where a run left them, fitted there first where
not (MST and AIM in the baseline environment ``--bench-python``, ``.venv-bench`` as
bench/requirements-bench.txt builds it; the DP-GAN in this one). A baseline that fails or runs past
``--baseline-timeout`` is shown as "-" and its reason logged and kept in the JSON.

Order: every table at the first ε, then every table at the next (smallest tables first, as
listed), so a run cut short still holds each table's ε = 1 row. The results files are rewritten
after every row. Prints markdown and writes it to bench/results/private_release.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.baselines import run_command  # noqa: E402
from bench.engine import BENCH_PY, CACHE, average_draws, cached, score  # noqa: E402
from bench.privacy import BASELINES as COMMANDS  # noqa: E402
from bench.splits import derived_columns, load_table, split  # noqa: E402
from cadasg_dist.cli import main as cadasg  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASELINES = ("mst", "aim", "dpgan")


def log(msg: str) -> None:
    print(f"[private_release {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def confirmed_codebook(train_csv: Path, spec, out: Path) -> Path:
    """The drafted codebook with its bounds removed and the identifiers declared."""
    draft = out.with_suffix(".draft.yaml")
    code = cadasg(["schema", str(train_csv), "--out", str(draft), "--force", "--target", spec.target,
                   "--context", ",".join(spec.contexts)])
    if code != 0:
        raise SystemExit(f"cadasg schema failed on {train_csv} (exit {code})")
    raw = yaml.safe_load(draft.read_text())
    for entry in raw["columns"].values():
        entry.pop("min", None), entry.pop("max", None)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def release(table: str, eps: float, draws: int, seed: int, work: Path) -> dict:
    df, spec = load_table(table)
    train, test = split(df, seed)
    train_csv = work / f"{table}_train.csv"
    train.to_csv(train_csv, index=False)
    codebook = confirmed_codebook(train_csv, spec, work / f"{table}_codebook.yaml")
    model = work / f"{table}_eps{eps:g}"
    start = time.perf_counter()
    code = cadasg(["train", str(train_csv), "--codebook", str(codebook), "--target", spec.target,
                   "--context", ",".join(spec.contexts), "--epsilon", f"{eps:g}", "--out", str(model), "--force"])
    fit_s = time.perf_counter() - start
    if code != 0:
        return {"table": table, "epsilon": eps, "model": "CA-DASG", "error": f"train exit {code}"}
    scores = []
    for d in range(draws):
        out = work / f"{table}_eps{eps:g}_{d}.parquet"
        cadasg(["sample", str(model), "--n", str(len(train)), "--seed", str(seed + d), "--out", str(out)])
        scores.append(score("CA-DASG", pd.read_parquet(out), train, test, spec, seed))
    meta = json.loads((model / "meta.json").read_text())
    return {**average_draws(scores), "table": table, "epsilon": eps, "fit_s": round(fit_s, 1),
            "epsilon_spent": meta["privacy"]["epsilon_spent"]}


def baseline(table: str, name: str, eps: float, seed: int, python: Path, timeout: float) -> dict:
    """A DP baseline's release scored on the same split: read from the cache, or fitted into it
    first. Returns the scores, or ``{"error": why}``."""
    key = f"{name}_eps{eps:g}" + ("_derived" if derived_columns(table) else "")
    df, spec = load_table(table)
    train, test = split(df, seed)
    hit = cached(table, key, seed)
    if hit is None:
        if name != "dpgan" and not python.exists():
            return {"error": f"no baseline environment at {python} (bench/requirements-bench.txt builds it)"}
        delta = min(1e-5, 1.0 / len(train) ** 2)
        template = (COMMANDS[name].replace(str(BENCH_PY), str(python))
                    .replace("{eps}", f"{eps:g}").replace("{delta}", f"{delta:g}"))
        log(f"{table}/{key}: fitting")
        meta = run_command(table, key, template, seed, CACHE, threads=1, timeout=timeout,
                           derived=derived_columns(table))
        if meta.get("status") != "ok":
            return {"error": str(meta.get("error") or meta.get("stderr_tail", "failed"))[-300:]}
        hit = cached(table, key, seed)
    fit_s = hit[1].get("fit_seconds")
    return {**score(name.upper(), hit[0], train, test, spec, seed), "fit_s": fit_s}


def render(rows: list[dict]) -> str:
    def fmt(v) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    head = ("| table | ε | CA-DASG utility | worst context | column shape | fit s | "
            + " | ".join(f"{b.upper()} utility" for b in BASELINES) + " |")
    lines = [head, "|" + "---|" * (6 + len(BASELINES))]
    for r in rows:
        base = [fmt(r.get(f"{b}_utility")) for b in BASELINES]
        lines.append(f"| {r['table']} | {r['epsilon']:g} | {fmt(r.get('utility_ratio'))} | {fmt(r.get('context_min'))} "
                     f"| {fmt(r.get('column_shape'))} | {fmt(r.get('fit_s'))} | " + " | ".join(base) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", default="MedExp,SLID,rwm5yr,HI,diamonds")
    ap.add_argument("--epsilons", default="1,3")
    ap.add_argument("--draws", type=int, default=3, help="synthetic samples scored per fit (averaged)")
    ap.add_argument("--seed", type=int, default=0, help="split and sampling seed (the DP noise is secret)")
    ap.add_argument("--baselines", default=",".join(BASELINES), help="of mst,aim,dpgan; empty: none")
    ap.add_argument("--bench-python", type=Path, default=BENCH_PY, help="the baseline environment's python")
    ap.add_argument("--baseline-timeout", type=float, default=1200, help="seconds per baseline fit")
    args = ap.parse_args()
    names = [b for b in args.baselines.split(",") if b]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cadasg-release-") as tmp:
        for eps in (float(e) for e in args.epsilons.split(",")):
            for table in args.tables.split(","):
                log(f"{table} at epsilon={eps:g}")
                row = release(table, eps, args.draws, args.seed, Path(tmp))
                log(json.dumps({k: row.get(k) for k in ("utility_ratio", "context_min", "fit_s", "error")}))
                for b in names:
                    found = baseline(table, b, eps, args.seed, args.bench_python, args.baseline_timeout)
                    row[f"{b}_utility"], row[f"{b}_fit_s"] = found.get("utility_ratio"), found.get("fit_s")
                    row[f"{b}_error"] = found.get("error")
                    log(f"{table}/{b} eps={eps:g}: " + (f"utility {found['utility_ratio']:.3f}"
                                                        if "error" not in found else found["error"]))
                rows.append(row)
                write(sorted(rows, key=lambda r: (args.tables.split(",").index(r["table"]), r["epsilon"])))
    print(render(rows))
    return 0


def write(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "private_release.md").write_text(render(rows) + "\n")
    (RESULTS / "private_release.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
