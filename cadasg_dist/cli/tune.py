"""``cadasg tune``: search loss weights and noise levels, write the Pareto front, optionally pick one.

    cadasg tune DATA --target COL --context COL[,COL] --trials N [--epsilon E] [--space FILE]
                [--pick "utility@epsilon<=3" [--force]] [--config FILE] [--set KEY=VALUE ...]
                [--address auto|ray://HOST:PORT] --out DIR

Flags parse into ``CADASGConfig`` as for ``cadasg train``; a key set by a flag (``--epochs``,
``--set``) is pinned: it leaves the search space. ``--epsilon E`` (or a finite ``privacy.epsilon``
in ``--config``) makes every trial private with ε up to E: the space's ``privacy.epsilon`` values
at most E, and E. Without one nothing is private, and every line of output says so.
Running the same command again with the same ``--out`` resumes an interrupted search; the picked
model (``OUT/picked``) is replaced only with ``--force``. ``--address`` runs the trials on a running
Ray cluster (default: a local Ray).

Privacy of tuning: trials train and are scored on tuning rows the picked model never trains on;
the picked model's ε covers its own training rows only, and the tuning rows are not protected.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cadasg_dist.cli.common import (
    CONTEXT_HELP,
    EXIT_INTERRUPTED,
    TARGET_HELP,
    add_address_flag,
    add_config_flags,
    add_force_flag,
    build_config,
    check_overwrite,
    plain_doc,
    privacy_line,
    require_target,
)
from cadasg_dist.errors import CADASGError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("tune", help="search loss weights and noise levels; write the Pareto front",
                              description=plain_doc(__doc__))
    p.add_argument("data", help="CSV or Parquet file (or a directory of Parquet parts)")
    p.add_argument("--target", metavar="COL", help=TARGET_HELP)
    p.add_argument("--context", metavar="COL[,COL]", help=CONTEXT_HELP)
    p.add_argument("--trials", type=int, required=True, help="number of trials (configurations) to run")
    p.add_argument("--space", help="search space YAML (default: configs/tune/default.yaml)")
    p.add_argument("--pick", help='train one front member on the final rows, e.g. "utility@epsilon<=3"')
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: CPUs / search.cpus_per_trial)")
    p.add_argument("--verbose", action="store_true", help="show Tune's status tables")
    p.add_argument("--out", required=True, metavar="DIR", help="search directory (rerun with the same one to resume)")
    add_force_flag(p, "an existing picked model, OUT/picked")
    add_address_flag(p, "Ray cluster to run the trials on")
    add_config_flags(p)
    p.set_defaults(func=run)
    return p


@dataclass(frozen=True)
class TuneJob:
    """What ``cadasg tune`` runs: the search request, the table and the optional pick rule."""

    request: Any  # tuning.search.SearchRequest
    frame: Any  # the whole table (pandas DataFrame)
    rule: Any  # tuning.front.PickRule | None


def run(args: argparse.Namespace) -> int:
    job = build_job(args)
    return _finish(_search(job), job)


def build_job(args: argparse.Namespace) -> TuneJob:
    """Parse the flags into a search request; every user error is raised before any trial runs."""
    from cadasg_dist.config import CADASGConfig
    from cadasg_dist.data.io import read_table
    from cadasg_dist.tuning.front import parse_pick
    from cadasg_dist.tuning.search import SearchRequest

    cfg = build_config(args)
    require_target(cfg, "utility is measured on it")
    if args.address:
        cfg = cfg.replace(**{"distributed.address": args.address})
    cap = cfg.privacy.epsilon if cfg.private else None  # --epsilon, else the config file's
    rule = parse_pick(args.pick) if args.pick else None
    if rule is not None:
        check_overwrite(Path(args.out) / "picked", args.force, "--out")
    file_cfg = CADASGConfig.from_yaml(args.config) if args.config else CADASGConfig()
    pinned = changed_keys(file_cfg, cfg) - {"target", "context.columns", "privacy.epsilon"}
    space = _space(args).for_run(epsilon_cap=cap, pinned=pinned)
    request = SearchRequest(base=cfg, space=space, trials=args.trials, out=Path(args.out), seed=cfg.train.seed,
                            verbose=1 if args.verbose else 0)
    return TuneJob(request, read_table(args.data), rule)


def _space(args: argparse.Namespace) -> Any:
    import dataclasses

    from cadasg_dist.tuning.space import DEFAULT_SPACE, SearchSpace

    space = SearchSpace.from_yaml(args.space or DEFAULT_SPACE)
    if args.max_concurrent is not None:
        settings = dataclasses.replace(space.settings, max_concurrent_trials=args.max_concurrent)
        space = dataclasses.replace(space, settings=settings)
    return space


def _search(job: TuneJob) -> Any:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise CADASGError("cadasg tune needs optuna: pip install optuna==4.9.0") from None
    import ray

    from cadasg_dist.tuning.progress import TrialProgress
    from cadasg_dist.tuning.search import init_ray, run_search

    cfg, space = job.request.config, job.request.space
    private = f"private, epsilon <= {cfg.privacy.epsilon:g}" if cfg.private else "NOT PRIVATE"
    print(f"tuning {job.request.trials} trials ({private}) over {', '.join(space.params)}", file=sys.stderr,
          flush=True)
    started = init_ray(cfg.distributed.address)
    try:
        return run_search(job.request, job.frame, callbacks=[TrialProgress()])
    finally:
        if started:
            ray.shutdown()


def _finish(outcome: Any, job: TuneJob) -> int:
    from cadasg_dist.tuning.final import train_picked
    from cadasg_dist.tuning.report import privacy_note, write_outputs

    out = job.request.out
    paths = write_outputs(outcome, out)
    counts = {s: sum(r.status == s for r in outcome.records) for s in
              ("completed", "stopped", "infeasible", "error", "unfinished")}
    done = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(f"{'resumed search' if outcome.resumed else 'search'}: {done} in {outcome.wall_s:.0f}s "
          f"({outcome.stopped_fraction():.0%} stopped early); front: {len(outcome.front())} trials -> "
          f"{paths['markdown']}, {paths['plot']}")
    print(f"privacy of tuning: {privacy_note(outcome)['statement']}")
    if outcome.interrupted:
        print(f"cadasg: the search was interrupted; run the same command again to resume it from {out}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if job.rule is None:
        return 0
    picked = train_picked(outcome, job.frame, job.rule, out / "picked")
    values = ", ".join(f"{k} {v:.3g}" for k, v in picked.model.meta["tuning"]["validation"].items()
                       if isinstance(v, int | float))
    print(f"picked {picked.record.trial_id} by {job.rule} (validation: {values}); trained on "
          f"{picked.model.meta['training_rows']} rows; {privacy_line(picked.model.ledger)}")
    print(f"model written to {picked.path}")
    return 0


def changed_keys(before: Any, after: Any) -> set[str]:
    """Dotted config keys (``section.field``) whose values differ between two configs."""
    old = _flat(before.to_dict())
    return {k for k, v in _flat(after.to_dict()).items() if old.get(k) != v}


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    """One level deep: a config is sections of fields (whose values may themselves be mappings)."""
    out: dict[str, Any] = {}
    for section, value in tree.items():
        if isinstance(value, dict):
            out.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            out[section] = value
    return out
