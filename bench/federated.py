"""Federated vs centralized CA-DASG on real tables split into institution silos.

HI.csv is split into its 4 regions, rwm5yr by year (5 silos). On the same 80/20 split as the
engine benchmark (``bench/splits.py``), at the same epsilon and the same number of passes over the
data (``rounds * local_epochs`` epochs), it trains:

* ``central (engine)``: ``CADASG.fit`` on the pooled training rows (its own preprocessing);
* ``central (plan)``: the engine's loop on the pooled rows encoded with the federation's plan (the
  same DP-released schema), which isolates the effect of federating from that of the schema;
  private, also the same model sampled with the central calibration defaults (a private plan turns
  the per-class and per-context calibrations on at any epsilon, a central fit only at epsilon <= 3);
* ``federated + SecAgg+`` and ``federated``: ``cadasg federated`` on the simulation engine;
* ``one silo (NAME)``: the largest silo alone, with the plan (what an institution gets by itself).

Every model is scored on the same holdout by ``cadasg_dist.evaluate``: utility ratio (TSTR / TRTR)
and per-context fidelity (the holdout-weighted mean and the worst context), averaged over
``--samples`` synthetic draws (3; ``utility_sd`` is their spread). Gaps are relative to
``central (plan)``. Also: bytes sent per client per round and wall time per round (median over
rounds 2..R: round 1 includes starting the Ray actors) with and without SecAgg+.

    .venv/bin/python bench/federated.py --tables HI,rwm5yr --rounds 5 --local-epochs 4
    .venv/bin/python bench/federated.py --tables HI --epsilon 8 --rounds 3 --local-epochs 2
    .venv/bin/python bench/federated.py --tables HI --rounds 3 --local-epochs 2 --dropout other

``--dropout SILO`` measures a lost silo instead: two deployments (``federated/deploy.py``: a TLS
SuperLink and one SuperNode process per silo, each with only its own file), one undisturbed and
one whose SILO SuperNode is killed with SIGKILL (its whole process group) once round 1 is
aggregated, i.e. as round 2 starts; both scored alike (``--routes`` picks SecAgg+ or the plain
route; one route, the first listed). Each deployment builds its own plan from the training rows.

Category sets below are DECLARED (from the R packages' documentation), as a federated run needs.
Prints a markdown table and writes it with the raw numbers to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import average_draws, scoring_view  # noqa: E402
from bench.splits import DECLARED, load_table, split  # noqa: E402
from cadasg_dist.config import CADASGConfig, parse_overrides  # noqa: E402
from cadasg_dist.evaluate import evaluate  # noqa: E402
from cadasg_dist.federation.config import FederatedConfig  # noqa: E402
from cadasg_dist.federation.plan import FederationPlan, build_plan, build_round_plan, encode_silo  # noqa: E402
from cadasg_dist.federation.records import model_arrays  # noqa: E402
from cadasg_dist.federation.server import assemble_model  # noqa: E402
from cadasg_dist.federation.simulation import plan_parties  # noqa: E402
from cadasg_dist.synthesizer import CADASG  # noqa: E402

SILO_COLUMN = {"HI": "region", "rwm5yr": "year"}


def configs(table: str, spec, args: argparse.Namespace) -> tuple[CADASGConfig, FederatedConfig]:
    cfg = CADASGConfig.from_dict({
        "target": spec.target, "context": {"columns": list(spec.contexts)},
        "data": {"columns": DECLARED[table]}, "privacy": {"epsilon": args.epsilon},
        "train": {"epochs": args.rounds * args.local_epochs, "seed": args.seed,
                  **({"batch_size": args.batch_size} if args.batch_size else {})},
    })
    fed = FederatedConfig(rounds=args.rounds, local_epochs=args.local_epochs, round_timeout=3600,
                          secagg_max_weight=20_000)
    return cfg, fed


def score(model: CADASG, train: pd.DataFrame, test: pd.DataFrame, spec, seed: int, samples: int = 1) -> dict:
    """Scores averaged over ``samples`` synthetic draws of the model (seeds seed, seed + 1, ...): on
    rwm5yr one draw's utility ratio varies by about +-0.02 around the model's, as much as the
    gaps this bench looks for; ``utility_sd`` is the spread between the draws."""
    scores = []
    for i in range(samples):
        synthetic = model.sample(len(train), seed=seed + i)
        res = evaluate(scoring_view(test, spec), scoring_view(synthetic[train.columns], spec), target=spec.target,
                       context=list(spec.contexts), train=scoring_view(train, spec), seed=seed)
        scores.append({"utility_ratio": res.utility.ratio if res.utility else None,
                       "context_fidelity": res.per_context.weighted_mean, "context_min": res.per_context.min,
                       "column_shape": res.fidelity.column_shape})
    out = average_draws(scores)
    return {**out, "samples": out.pop("draws"), "epsilon": model.epsilon}


def make_plan(kind: str, train: pd.DataFrame, column: str, cfg: CADASGConfig, fed: FederatedConfig) -> FederationPlan:
    """``pooled``: today's plan, released over the pooled training rows (a trusted curator);
    ``federated``: the plan round over the silos split by ``column``, each silo's rows on their own
    and only the noisy sums seen. The rows keep their storage types, as ``cadasg federated`` reads
    them: a silo column stored as text would give the plan text categories the pooled plan has not."""
    if kind == "pooled":
        return build_plan(train, cfg, fed)
    values = sorted(v.item() if hasattr(v, "item") else v for v in train[column].dropna().unique())
    sources = [{"name": str(v), "kind": "column", "column": column, "value": v} for v in values]
    return build_round_plan(plan_parties(sources, train), cfg, fed)


def draw_plans(kinds: list[str], train: pd.DataFrame, table: str, cfg: CADASGConfig, fed: FederatedConfig,
               work: Path, repeat: int) -> dict[str, tuple[FederationPlan, Path]]:
    """A fresh plan of each kind for one repeat. The two kinds differ only in their noise draw (the
    split plan round releases each statistic with the pooled release's noise), so fits repeated on
    one draw of each compare two draws, not the two ways of building a plan (measured on rwm5yr at
    epsilon 3: one fit on each of four draws of a kind spans 0.95 to 0.99 in utility ratio)."""
    plans = {}
    for kind in kinds:
        t0 = time.perf_counter()
        plan = make_plan(kind, train, SILO_COLUMN[table], cfg, fed)
        plan_path = work / f"{table}-plan-{kind}-{repeat}.json"
        plan_path.write_text(plan.to_json())
        plans[kind] = plan, plan_path
        print(f"[federated] {kind} plan {repeat} built in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return plans


def central_with_plan(plan: FederationPlan, rows: pd.DataFrame) -> CADASG:
    """The engine's training loop (private or not) on ``rows`` encoded with the plan."""
    from cadasg_dist.train.fit import fit_local

    data = encode_silo(plan, rows)
    cfg = plan.config
    if cfg.private:
        from cadasg_dist.private.fit import fit_private

        state, cache, ledger = fit_private(cfg, data.x, data.context, plan.dims, plan.schema, units=data.units,
                                           ledger=plan.silo_ledger())
        ledgers = {"all": ledger.to_json()}
    else:
        state, cache = fit_local(cfg, data.x, data.context, plan.dims)
        ledgers = {}
    summary = {"silos": {"all": {"rows": data.n_rows}}, "rounds": [], "seconds": 0.0}
    return assemble_model(plan, model_arrays(state.nets), cache.stats, ledgers, summary)


def federated(train: pd.DataFrame, table: str, args: argparse.Namespace, plan_path: Path, secagg: bool,
              work: Path, server_lr: float = 1.0, plan: str = "pooled") -> tuple[CADASG, float]:
    data = work / f"{table}-train.parquet"
    if not data.exists():  # the same rows for every federated run of the table
        train.to_parquet(data)
    out = work / f"{table}-fed-{'secagg' if secagg else 'plain'}-lr{server_lr:g}-{plan}"
    cmd = [sys.executable, "-m", "cadasg_dist.cli", "federated", str(data), "--silo-column", SILO_COLUMN[table],
           "--plan", str(plan_path), "--rounds", str(args.rounds), "--local-epochs", str(args.local_epochs),
           "--server-lr", f"{server_lr:g}", "--secagg" if secagg else "--no-secagg",
           "--set", "federated.round_timeout=3600", "--set", "federated.secagg_max_weight=20000",
           "--num-cpus", "2", "--out", str(out), "--force"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"federated run failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return CADASG.load(out), time.perf_counter() - t0


def round_costs(model: CADASG) -> dict:
    """Round 1 apart (it starts the Ray actors); the protocol's own time is the round's time minus
    its longest message exchange (the one in which the silos train)."""
    rounds = [r for r in model.meta["federated"]["rounds"] if r["phase"] == "train"]
    later = rounds[1:] or rounds
    return {"round1_s": rounds[0]["seconds"], "round_s": statistics.median(r["seconds"] for r in later),
            "protocol_s": statistics.median(r["seconds"] - max(r["exchange_seconds"]) for r in later),
            "bytes_per_client_round": statistics.median(r["bytes_up_per_client"] for r in rounds),
            "dropouts": sum(r["dropped"] for r in rounds)}


def run_table(table: str, args: argparse.Namespace, work: Path) -> list[dict]:
    df, spec = load_table(table)
    train, test = split(df, seed=args.seed)
    cfg, fed = configs(table, spec, args)
    silo_col = SILO_COLUMN[table]
    print(f"[federated] {table}: {len(train)} train rows, silos by {silo_col}: "
          f"{train[silo_col].value_counts().to_dict()}", file=sys.stderr, flush=True)
    rows = []

    def add(name: str, model: CADASG, seconds: float, **extra) -> None:
        rows.append({"table": table, "model": name, "fit_s": round(seconds, 1),
                     **score(model, train, test, spec, args.seed, args.samples), **extra})
        print(f"[federated] {table} {name}: {rows[-1]}", file=sys.stderr, flush=True)

    kinds = args.plan.split(",")
    run_cfg = cfg.replace(**args.federated_set) if args.federated_set else cfg
    if not args.skip_engine:
        # Non-private, the engine infers its schema itself (its non-private path does not type declared
        # integer categories, so they are left out); private, it needs the declarations.
        engine_cfg = cfg if cfg.private else cfg.replace(**{"data.columns": {}})
        t0 = time.perf_counter()
        add("central (engine)", CADASG(engine_cfg).fit(train), time.perf_counter() - t0)
    for repeat in range(args.repeats):
        plans = draw_plans(kinds, train, table, run_cfg, fed, work, repeat)
        plan = next(iter(plans.values()))[0]
        if args.federated_set:  # the central runs keep the defaults
            plan = make_plan(kinds[0], train, silo_col, cfg, fed)
        if not args.skip_central:
            t0 = time.perf_counter()
            central = central_with_plan(plan, train)
            add("central (plan)", central, time.perf_counter() - t0, repeat=repeat)
            if cfg.private:  # the same model sampled as a central fit would be: the calibrations' central "auto"
                central.config = central.config.replace(**{"model.calibrate_classes": "auto",
                                                           "model.calibrate_contexts": "auto"})
                add("central (plan), central calibration defaults", central, 0.0, repeat=repeat)
        for kind, (_, plan_path) in plans.items():
            for server_lr in [float(v) for v in str(args.server_lr).split(",")]:
                for secagg in [route == "secagg" for route in args.routes.split(",")]:
                    model, seconds = federated(train, table, args, plan_path, secagg, work, server_lr, kind)
                    name = ("federated + SecAgg+" if secagg else "federated") + \
                        (f", server lr {server_lr:g}" if server_lr != 1.0 else "") + \
                        (f", {kind} plan" if len(plans) > 1 or kind != "pooled" else "")
                    add(name, model, seconds, repeat=repeat, plan=kind, **round_costs(model))
    if not args.skip_one_silo:
        largest = train[silo_col].astype(str).value_counts().index[0]
        t0 = time.perf_counter()
        add(f"one silo ({largest})", central_with_plan(plan, train[train[silo_col].astype(str) == largest]),
            time.perf_counter() - t0)
    return rows


def deployed(train: pd.DataFrame, table: str, spec, args: argparse.Namespace, work: Path, kill: str | None,
             port: int) -> tuple[CADASG, float]:
    """One ``federated/deploy.py`` run over the training rows split by the table's silo column;
    ``kill``: the silo whose SuperNode is SIGKILLed once round 1 is aggregated."""
    import os
    import signal

    import yaml

    data = work / f"{table}-train.parquet"
    if not data.exists():
        train.to_parquet(data)
    cfg, fed = configs(table, spec, args)
    secagg = args.routes.split(",")[0] == "secagg"
    raw = {**cfg.to_dict(), "federated": fed.replace(secagg=secagg, max_dropouts=1, round_timeout=900).to_dict()}
    (work / "deploy.yaml").write_text(yaml.safe_dump(raw))
    tag = f"killed-{kill}" if kill else "undisturbed"
    out, wd = work / f"{table}-deployed-{tag}", work / f"deploy-{tag}"
    cmd = [sys.executable, str(ROOT / "federated" / "deploy.py"), str(data), "--silo-column", SILO_COLUMN[table],
           "--config", str(work / "deploy.yaml"), "--out", str(out), "--workdir", str(wd), "--port", str(port),
           "--node-port", str(port + 100), "--timeout", "5400"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    log = wd / "logs" / "flwr-run.log"
    while kill and proc.poll() is None and not (log.exists() and "round 1 (train" in log.read_text(errors="replace")):
        if time.perf_counter() - t0 > 5400:
            break
        time.sleep(1.0)
    if kill and proc.poll() is None:
        os.killpg(json.loads((wd / "supernodes.json").read_text())[kill], signal.SIGKILL)
        print(f"[federated] SIGKILLed silo {kill}'s SuperNode at {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    stdout, stderr = proc.communicate(timeout=5400)
    if proc.returncode != 0:
        raise RuntimeError(f"deployment {tag} failed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return CADASG.load(out), time.perf_counter() - t0


def run_dropout(table: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """The undisturbed deployment and the one losing ``args.dropout``, scored on the same holdout."""
    df, spec = load_table(table)
    train, test = split(df, seed=args.seed)
    rows = []
    for port, kill in ((19791, None), (19891, args.dropout)):
        model, seconds = deployed(train, table, spec, args, work, kill, port)
        meta = model.meta["federated"]
        rows.append({"table": table, "model": f"deployed, {'killed ' + kill if kill else 'undisturbed'}",
                     "fit_s": round(seconds, 1), **score(model, train, test, spec, args.seed, args.samples),
                     "contributions": meta["contributions"], "final_cache_silos": meta["final_cache_silos"],
                     "silo_ledgers": sorted(meta["silo_ledgers"]),
                     "dropouts": sum(r["dropped"] for r in meta["rounds"])})
        print(f"[federated] {table} {rows[-1]['model']}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"
    return str(v)


def render(rows: list[dict]) -> str:
    cols = ["table", "model", "plan", "repeat", "epsilon", "utility_ratio", "utility_sd", "context_fidelity",
            "context_min", "column_shape",
            "fit_s", "round1_s", "round_s", "protocol_s", "bytes_per_client_round"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    notes = []
    base = next((r for r in rows if r["model"] == "deployed, undisturbed"), None)
    for r in (r for r in rows if r["model"].startswith("deployed, killed") and base):
        gap = r["utility_ratio"] - base["utility_ratio"]
        notes.append(f"{r['table']} {r['model']}: utility ratio {r['utility_ratio']:.3f} vs "
                     f"{base['utility_ratio']:.3f} undisturbed (difference {gap:+.3f}; goal within 0.02); "
                     f"contributions {r['contributions']}, final cache from {r['final_cache_silos']}, "
                     f"ledgers of {r['silo_ledgers']}")
    for table in dict.fromkeys(r["table"] for r in rows):
        mine = [r for r in rows if r["table"] == table]
        for name in dict.fromkeys(r["model"] for r in mine if r["model"].startswith("federated")):
            # Each federated run against the central run of its own repeat; mean and sd over repeats.
            gaps: dict[str, list[float]] = {"utility_ratio": [], "context_fidelity": []}
            for r in (r for r in mine if r["model"] == name):
                base = next((b for b in mine if b["model"] == "central (plan)" and b.get("repeat") == r.get("repeat")),
                            None)
                if base is None:
                    continue
                for k in gaps:
                    if base.get(k) and r.get(k) is not None:
                        gaps[k].append((base[k] - r[k]) / base[k])
            if gaps["utility_ratio"] or gaps["context_fidelity"]:  # none with --skip-central
                notes.append(f"{table} {name}: utility-ratio gap {spread(gaps['utility_ratio'])}, per-context "
                             f"fidelity gap {spread(gaps['context_fidelity'])} vs central (plan) (goal <= 3%)")
        sec = {r["model"]: r for r in mine if r["model"] in ("federated + SecAgg+", "federated")}
        if len(sec) == 2:
            s, p = sec["federated + SecAgg+"], sec["federated"]
            notes.append(f"{table} SecAgg+ cost: {s['round_s']:.2f}s vs {p['round_s']:.2f}s per round (protocol alone "
                         f"{s['protocol_s']:.2f}s vs {p['protocol_s']:.2f}s), {s['bytes_per_client_round']:,.0f} vs "
                         f"{p['bytes_per_client_round']:,.0f} bytes per client per round")
        by_plan: dict[str, list[dict]] = {}
        for r in (r for r in mine if r.get("plan")):
            by_plan.setdefault(r["plan"], []).append(r)
        if {"pooled", "federated"} <= set(by_plan):  # each repeat on its own draw of each plan: means over draws
            p, f = ({k: statistics.mean(r[k] for r in by_plan[kind]) for k in ("utility_ratio", "context_min")}
                    for kind in ("pooled", "federated"))
            notes.append(f"{table} plan round vs pooled plan, mean of {len(by_plan['federated'])} plan draws: utility "
                         f"ratio {f['utility_ratio']:.3f} vs {p['utility_ratio']:.3f} "
                         f"({f['utility_ratio'] - p['utility_ratio']:+.3f}), worst context {f['context_min']:.3f} vs "
                         f"{p['context_min']:.3f} (goal: at most 0.02 utility below)")
    return "\n".join(lines + [""] + notes)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:+.1%}"
    return f"{statistics.mean(values):+.1%} ± {statistics.stdev(values):.1%} (n={len(values)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default="HI,rwm5yr")
    p.add_argument("--epsilon", type=float, default=math.inf)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--local-epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, help="every model's batch (per silo when federated); default the engine's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-lr", default="1", help="federated.server_lr; a comma list runs each against the "
                   "same central model")
    p.add_argument("--repeats", type=int, default=1, help="repeat the plans and the fits: each repeat draws "
                   "a fresh plan of each kind (a private release's noise is secret, so they differ); gaps are reported "
                   "as mean ± sd")
    p.add_argument("--samples", type=int, default=3, help="synthetic draws scored per model (averaged)")
    p.add_argument("--skip-one-silo", action="store_true", help="skip the one-silo-alone row")
    p.add_argument("--federated-set", action="append", default=[], metavar="KEY=VALUE",
                   help="engine config override for the federated runs only (the central runs keep the defaults)")
    p.add_argument("--skip-engine", action="store_true", help="skip the central (engine) row")
    p.add_argument("--routes", default="secagg,plain", help="federated runs: secagg, plain or both")
    p.add_argument("--dropout", metavar="SILO", help="measure two deployments instead: undisturbed, and SILO's "
                   "SuperNode SIGKILLed as round 2 starts")
    p.add_argument("--plan", default="pooled", help="how the federated runs' plan is built: pooled (released over "
                   "the pooled training rows, as before), federated (the plan round: per-silo noisy sums), or "
                   "pooled,federated (both, the same training settings; the central rows use the first)")
    p.add_argument("--skip-central", action="store_true", help="skip the central (plan) rows")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    args.federated_set = parse_overrides(args.federated_set, "--federated-set")
    with tempfile.TemporaryDirectory(prefix="cadasg-fed-bench-") as tmp:
        runner = run_dropout if args.dropout else run_table
        rows = [r for t in args.tables.split(",") for r in runner(t.strip(), args, Path(tmp))]
    text = render(rows)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"eps{args.epsilon:g}_{args.plan.replace(',', '-')}_r{args.rounds}x{args.local_epochs}" \
          f"{f'_b{args.batch_size}' if args.batch_size else ''}" \
          f"_lr{args.server_lr.replace(',', '-')}_x{args.repeats}_seed{args.seed}" + \
          "".join(f"_{k.rsplit('.', 1)[-1]}{v}" for k, v in args.federated_set.items()) + \
          (f"_dropout-{args.dropout}" if args.dropout else "")
    (out / f"federated_{tag}.md").write_text(text + "\n")
    (out / f"federated_{tag}.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
