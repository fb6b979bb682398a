"""DP benchmark: CA-DASG at ε ∈ {1, 3, 8, ∞} beside DP baselines at the same ε, with attacks.

    .venv/bin/python bench/privacy.py --tables HI --epsilons 1,3,8,inf
    .venv/bin/python bench/privacy.py --tables HI --epsilons 3,inf --audit --shadow   # + attacks

One table per run is the intended use (a private fit takes minutes here). On the 80/20 split of
``bench/splits.py``, δ = min(1e-5, 1/n²) with n the training rows. For every ε:

* CA-DASG: ``privacy.epsilon = ε`` and nothing else of the run's settings: a private run takes the
  library's private profile (``cadasg_dist/config/profiles.py``, what ``configs/private.yaml``
  used to set: 30 epochs of 1,000-row batches, latent 16, utility head [64], cache clips 5, EMA
  0.99) and ε = ∞ the non-private one, as ``CADASGConfig.resolved`` decides for any user; each
  table's target, contexts and declared categories come from ``bench/splits.py``, rows are the
  privacy unit; bounds and categories not declared there are DP releases, DP-SGD on every network,
  the DP cache; ``--epochs`` sets the epochs. The ε it reports is the
  ledger's. Its scores are the means over ``--draws`` synthetic tables of the one fit (3;
  ``utility_sd`` is their spread: one draw's utility ratio moves by about ±0.02 on rwm5yr, as much
  as the margins to the goals). ``--fits N`` repeats the fit N times and averages them
  (``fit_sd``: the spread between fits, whose DP noise differs; ``utility_min``: the worst fit;
  rwm5yr at ε = 1 moves by about ±0.03 from fit to fit). A baseline is scored on the one table it
  releases.
* baselines, in the same run and the same split: smartnoise-synth's MST and AIM
  (``bench/dp_baselines.py`` in ``.venv-bench``) and a DP-SGD GAN (``bench/dpgan.py``), cached
  under ``bench/.cache/{table}/{name}_eps{ε}/`` like the SDV baselines.
* scores from ``cadasg_dist.evaluate`` on the holdout: utility ratio, the worst context's
  fidelity, exact-match rate, DCR share and the distance attack's AUC (members = training rows,
  non-members = holdout rows).

``--audit``: a second CA-DASG run per ε with canaries: 200 of the holdout's least typical rows,
each added to the training rows with probability 1/2; the attacker scores each canary by minus its
distance to the closest synthetic row and the one-run audit (Steinke et al. 2023) turns its
guesses into an ε lower bound at 95% confidence. ``--shadow``: the shadow-model attack with 3
shadow CA-DASG models at the same ε, each trained on 2,000 rows of the holdout's first half (the
attacker's population sample), scored on 1,000 training rows vs 1,000 rows of the holdout's second
half. Both are ``cadasg_dist.evaluate.audit`` (what ``cadasg audit`` runs on a saved model).

Cache: each CA-DASG fit is kept with its model and draws under
``bench/.cache/{table}/cadasg_eps{ε}/seed{S}_{key}[_fit{i}]/``, ``key`` a sha256 (``fit_key``) of
what determines the fit: the resolved config (``CADASGConfig.resolved``
with the training rows' count: a change to the profile refits), the training rows by content (the table and its
split), the engine's source and the torch and numpy versions. The engine's source is every
``cadasg_dist/**/*.py`` but the command line (``cli/``), ``evaluate/`` (scoring
and the audits), ``demo.py`` and ``client.py``, which a fit and its sampling never import; the
runners (``distributed/``, ``federation/``, ``tuning/``) stay in, so an edit there refits too.

Prints markdown and writes it with the raw numbers to bench/results/privacy_{table}.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import BENCH_PY, CACHE, average_draws, cached  # noqa: E402
from bench.engine import score as engine_score  # noqa: E402
from bench.splits import DECLARED, derived_columns, load_table, split  # noqa: E402
from cadasg_dist.config import CADASGConfig, ContextConfig, TrainConfig, parse_overrides, profiles  # noqa: E402
from cadasg_dist.evaluate import audit  # noqa: E402
from cadasg_dist.synthesizer import CADASG  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASELINES = {
    "mst": f"{BENCH_PY} {ROOT / 'bench' / 'dp_baselines.py'} --synth mst --epsilon {{eps}} --delta {{delta}} "
           "--seed {seed} {train} {out}",
    "aim": f"{BENCH_PY} {ROOT / 'bench' / 'dp_baselines.py'} --synth aim --epsilon {{eps}} --delta {{delta}} "
           "--seed {seed} {train} {out}",
    "dpgan": f"{sys.executable} {ROOT / 'bench' / 'dpgan.py'} --epsilon {{eps}} --delta {{delta}} --seed {{seed}} "
             "{train} {out}",
}
OVERRIDES: dict = {}  # --set KEY=VALUE: wins over the profile of either privacy


def log(msg: str) -> None:
    print(f"[privacy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def private_profile() -> dict[str, Any]:
    """The library's private profile as dotted keys (written beside the results): what a private
    run without settings of its own trains with."""
    return {**profiles.profile(True), "train.epochs": profiles.PRIVATE_EPOCHS}


def config(spec, eps: float, delta: float, seed: int, epochs: int | None) -> CADASGConfig:
    """The run's config, its profile resolved (``CADASGConfig.resolved``): private at a finite ε."""
    cfg = CADASGConfig(target=spec.target, context=ContextConfig(columns=tuple(spec.contexts)),
                       train=TrainConfig(seed=seed))
    private = {"data.columns": DECLARED.get(spec.name, {})} if math.isfinite(eps) else {}
    over = {**private, **OVERRIDES,
            "privacy.epsilon": eps, "privacy.delta": delta if math.isfinite(eps) else None}
    if epochs:
        over["train.epochs"] = epochs
    return cfg.replace(**over).resolved()


def score(name: str, eps: float, synthetic: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, spec,
          seed: int) -> dict:
    return {**engine_score(name, synthetic, train, test, spec, seed), "epsilon": eps}


def fit_ours(train: pd.DataFrame, spec, eps: float, delta: float, seed: int, epochs: int | None
             ) -> tuple[CADASG, float]:
    t0 = time.perf_counter()
    model = CADASG(config(spec, eps, delta, seed, epochs)).fit(train)
    return model, time.perf_counter() - t0


# Not read by a fit or its sampling: the command line, the scoring and the audits, the demo, the
# serving client. Everything else under cadasg_dist/ (the runners too: a conservative miss) is the engine.
NOT_ENGINE = ("cli", "evaluate", "demo.py", "client.py")


def engine_digest() -> str:
    """sha256 over the engine's source files (path and content, in sorted order)."""
    package = ROOT / "cadasg_dist"
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] in NOT_ENGINE or rel.stem == "cli" or rel.stem.endswith("_command"):
            continue
        h.update(rel.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def fit_key(cfg: CADASGConfig, train: pd.DataFrame) -> str:
    """Cache key of a fit: what determines it. The resolved config, the training rows (the table
    and its split, by content), the engine's source and the numeric libraries' versions."""
    import torch

    rows = hashlib.sha256(json.dumps([str(c) for c in train.columns]).encode())
    rows.update(pd.util.hash_pandas_object(train, index=True).to_numpy().tobytes())
    text = json.dumps({"config": cfg.resolved(len(train)).to_dict(), "rows": rows.hexdigest(),
                       "engine": engine_digest(), "torch": torch.__version__, "numpy": np.__version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ours_cached(train: pd.DataFrame, spec, eps: float, delta: float, seed: int, epochs: int | None,
                draws: int = 1, fit: int = 0) -> tuple[list[pd.DataFrame], dict]:
    """``draws`` synthetic tables of CA-DASG at ``eps`` (seeds seed, seed + 1, ...) and its fit facts,
    cached with the fitted model by ``fit_key``: a rerun that adds a baseline, an attack or draws
    does not refit, and a change to the engine, the config or the rows does. ``fit`` > 0 names a
    further fit of the same config (the DP noise comes from OS entropy, so each fit differs)."""
    key = fit_key(config(spec, eps, delta, seed, epochs), train)
    d = CACHE / spec.name / f"cadasg_eps{eps:g}" / (f"seed{seed}_{key}" + (f"_fit{fit}" if fit else ""))
    if (d / "meta.json").exists():
        meta = json.loads((d / "meta.json").read_text())
        model = None
    else:
        model, fit_s = fit_ours(train, spec, eps, delta, seed, epochs)
        meta = {"epsilon_spent": spent(model), "fit_s": fit_s, "epochs": model.config.train.epochs,
                "steps": (model.meta.get("privacy") or {}).get("steps_taken"),
                **{k: round(v, 3) for k, v in (model.history[-1] if model.history else {}).items()
                   if k.startswith("step_scale_")}}
        model.save(d / "model")
        (d / "meta.json").write_text(json.dumps(meta))
    tables = []
    for i in range(draws):
        path = d / f"synthetic_{i}.parquet"
        if not path.exists():
            model = model or CADASG.load(d / "model")
            model.sample(len(train), seed=seed + i).to_parquet(path)
        tables.append(pd.read_parquet(path))
    return tables, meta


def average_fits(fits: list[dict]) -> dict:
    """One CA-DASG row for several fits of one config: the mean of every numeric score, with
    ``fits``, ``fit_sd`` (the spread between the fits' utility ratios), ``utility_min`` (the worst
    fit) and ``fit_utilities``; one fit is returned as it is."""
    if len(fits) == 1:
        return fits[0]
    out = average_draws(fits)  # the means; its utility_sd is then the spread between the fits
    draw_sd = [f["utility_sd"] for f in fits]
    utility = [f["utility_ratio"] for f in fits]
    return {**out, "utility_sd": None if None in draw_sd else float(np.mean(draw_sd)), "draws": fits[0]["draws"],
            "fits": len(fits), "fit_sd": out["utility_sd"], "utility_min": min(utility), "fit_utilities": utility}


def spent(model: CADASG) -> float:
    return float(model.ledger.epsilon()) if model.ledger.private else math.inf


def run_baseline(table: str, name: str, eps: float, delta: float, seed: int, timeout: float) -> pd.DataFrame | None:
    from bench.baselines import run_command

    derived = derived_columns(table)  # the same declared knowledge CA-DASG gets
    key = f"{name}_eps{eps:g}" + ("_derived" if derived else "")
    hit = cached(table, key, seed)
    if hit is None:
        template = BASELINES[name].replace("{eps}", f"{eps:g}").replace("{delta}", f"{delta:g}")
        log(f"{table}/{key}: fitting")
        meta = run_command(table, key, template, seed, CACHE, threads=1, timeout=timeout, derived=derived)
        if meta.get("status") != "ok":
            log(f"{table}/{key}: {meta.get('error', 'failed')}")
            return None
        hit = cached(table, key, seed)
    return hit[0] if hit else None


def canary_audit(train, test, spec, eps, delta, seed, epochs) -> dict:
    cfg = config(spec, eps, delta, seed, epochs)
    return audit.canary_audit(cfg, train, test, canaries=audit.CANARIES, seed=seed, delta=delta).to_dict()


def shadow(train, test, spec, eps, delta, seed, epochs, target_synthetic) -> dict:
    cfg = config(spec, eps, delta, seed, epochs)
    return dataclasses.asdict(audit.shadow_audit(cfg, train, test, target_synthetic, seed=seed))


def render(table: str, rows: list[dict], audits: dict, shadows: dict, n: int, delta: float) -> str:
    cols = ["epsilon", "model", "epsilon_spent", "utility_ratio", "utility_sd", "context_min", "column_shape",
            "pair_trend", "exact_match", "dcr_share", "mia_auc", "fit_s"]
    if any("fits" in r for r in rows):
        cols[5:5] = ["fits", "fit_sd", "utility_min"]
    lines = [f"## DP benchmark on {table} ({n} training rows, δ = {delta:g})", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return "inf" if math.isinf(v) else f"{v:.3f}"
        return str(v)

    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    if audits:
        lines += ["", "| ε (ledger) | one-run audit ε lower bound (95%) | canaries | guesses | right | "
                  "same attack on a copier |", "|---|---|---|---|---|---|"]
        lines += [f"| {fmt(a['epsilon_claimed'])} | {a['epsilon_lower']:.3f} | {a['canaries']} | {a['guesses']} | "
                  f"{a['correct']} | {fmt(a.get('copier_epsilon_lower'))} |" for a in audits.values()]
    if shadows:
        lines += ["", "| ε | shadow-model attack AUC (target) | AUC on a held-out shadow |", "|---|---|---|"]
        lines += [f"| {k} | {s['auc']:.3f} | {s['shadow_auc']:.3f} |" for k, s in shadows.items()]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", default="HI")
    ap.add_argument("--epsilons", default="1,3,8,inf")
    ap.add_argument("--baselines", default="mst,aim,dpgan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="cap CA-DASG's epochs (default: the engine's)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per baseline fit")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="CA-DASG config override")
    ap.add_argument("--tag", default="", help="suffix of the results files")
    ap.add_argument("--draws", type=int, default=3, help="synthetic draws of each CA-DASG fit, scores averaged")
    ap.add_argument("--fits", type=int, default=1,
                    help="CA-DASG fits per epsilon (each with its own DP noise), scores averaged; "
                         "fit_sd and utility_min give their spread")
    ap.add_argument("--audit", action="store_true")
    ap.add_argument("--shadow", action="store_true")
    args = ap.parse_args()
    baselines = [b for b in args.baselines.split(",") if b]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        ap.error(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)} (or --baselines '' for none)")
    if args.fits < 1 or args.draws < 1:
        ap.error(f"--fits and --draws must be >= 1, got {args.fits} and {args.draws}")
    import torch

    torch.set_num_threads(1)
    OVERRIDES.update(parse_overrides(args.set))
    epsilons = [float(e) for e in args.epsilons.split(",")]
    for table in args.tables.split(","):
        run_table(table, epsilons, baselines, args)
    return 0


def run_table(table: str, epsilons: list[float], baselines: list[str], args: argparse.Namespace) -> None:
    """Every ε on one table: fit (or read the cache), score, attack; print and write the results."""
    df, spec = load_table(table)
    train, test = split(df, seed=args.seed)
    delta = min(1e-5, 1.0 / len(train) ** 2)
    rows, audits, shadows = [], {}, {}
    for eps in epsilons:
        log(f"{table}: CA-DASG at epsilon={eps:g}")
        fits = []
        for i in range(args.fits):
            draws, meta = ours_cached(train, spec, eps, delta, args.seed, args.epochs, args.draws, fit=i)
            fits.append({**average_draws([score("CA-DASG", eps, s, train, test, spec, args.seed) for s in draws]),
                         **meta})
            log(f"{table}: CA-DASG eps={eps:g} fit {i + 1}/{args.fits}: utility {fits[-1]['utility_ratio']:.3f} "
                f"(sd {fits[-1]['utility_sd'] or 0:.3f} over {len(draws)} draws)")
            if i == 0:
                synthetic = draws[0]
        rows.append(average_fits(fits))
        for name in baselines:
            if not math.isfinite(eps) and name in ("mst", "aim"):
                continue  # no non-private mode; the SDV baselines of bench/engine.py are the ε = ∞ reference
            syn = run_baseline(table, name, eps, delta, args.seed, args.timeout)
            if syn is not None:
                rows.append(score(name, eps, syn, train, test, spec, args.seed))
        if args.audit:
            log(f"{table}: canary audit at epsilon={eps:g}")
            audits[f"{eps:g}"] = canary_audit(train, test, spec, eps, delta, args.seed, args.epochs)
        if args.shadow:
            log(f"{table}: shadow attack at epsilon={eps:g}")
            shadows[f"{eps:g}"] = shadow(train, test, spec, eps, delta, args.seed, args.epochs, synthetic)
    text = render(table, rows, audits, shadows, len(train), delta)
    print(text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"privacy_{table}{args.tag}.md").write_text(text + "\n")
    (RESULTS / f"privacy_{table}{args.tag}.json").write_text(json.dumps(
        {"rows": rows, "audits": audits, "shadows": shadows, "delta": delta, "overrides": OVERRIDES,
         "private_profile": private_profile()}, indent=1, default=str) + "\n")

if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
