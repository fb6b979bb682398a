"""``cadasg federated``: train across institution silos on the Flower simulation engine.

    cadasg federated DATA --silo-column COL --target COL --context COLS --rounds R --out DIR [--force]
    cadasg federated DATA --silo-column COL --silos NAME,NAME,... --epsilon 1 --config FILE --out DIR
    cadasg federated --silos DIR_OF_FILES --target COL --context COLS --rounds R --out DIR
    cadasg federated DATA --silo-column COL --config FILE --write-plan plan.json   # for deployment

One simulated client per silo; a silo reads only its own rows. The silos of a table split by a
column are named by a declaration, never by the data: ``--silos NAME,...`` or the column's declared
category set (``data.columns.COL.categories``); a private run without either is refused before any
row is read. Flags parse into ``CADASGConfig`` and ``FederatedConfig`` (the ``federated:`` section
of ``--config``); a flag left out keeps the config's value or the dataclass default. ``--target``
and ``--out`` are checked before any row is read; an existing model directory is replaced only with
``--force``. ``--address`` joins a running Ray (``--ray-address``, its old name, still works).
See docs/guides/federated.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cadasg_dist.cli.common import (
    CONTEXT_HELP,
    TARGET_HELP,
    add_address_flag,
    add_engine_flags,
    add_force_flag,
    check_overwrite,
    flag_values,
    plain_doc,
    require_target,
    run_alone,
    show_config_defaults,
)
from cadasg_dist.errors import CADASGError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("federated", help="train across silos with Flower (simulation engine)",
                              description=plain_doc(__doc__))
    p.add_argument("data", nargs="?", help="table to split into silos by --silo-column")
    p.add_argument("--silo-column", help="column whose values are the silos (e.g. region); the silo names come from "
                                         "--silos NAME,... or data.columns.COL.categories")
    p.add_argument("--silos", metavar="DIR|NAMES", help="directory with one .csv/.parquet file per silo; with "
                                                        "--silo-column, the silos' names (comma-separated)")
    p.add_argument("--target", metavar="COL", help=TARGET_HELP)
    p.add_argument("--context", metavar="COL[,COL]", help=CONTEXT_HELP)
    p.add_argument("--out", metavar="DIR", help="model directory to write (required unless --write-plan)")
    add_force_flag(p)
    p.add_argument("--config", help="YAML run config; its federated: section sets the federation")
    p.add_argument("--codebook", metavar="FILE", help="confirmed codebook (cadasg schema): column kinds, categories "
                                                      "(the silo column's too) and bounds, declared public")
    p.add_argument("--rounds", type=int, help="federated rounds")
    p.add_argument("--local-epochs", type=int, help="local epochs per round")
    p.add_argument("--strategy", choices=("fedavg", "fedprox"), help="server aggregation")
    p.add_argument("--proximal-mu", type=float, help="FedProx proximal weight")
    p.add_argument("--server-lr", type=float, help="server step on the silos' mean update (1.0: plain FedAvg)")
    p.add_argument("--local-lr-scale", type=float, help="the silos' learning rates are the engine's times this")
    p.add_argument("--secagg", dest="secagg", action="store_true", default=None, help="Flower SecAgg+ on")
    p.add_argument("--no-secagg", dest="secagg", action="store_false", help="Flower SecAgg+ off")
    p.add_argument("--min-clients", type=int, help="fewest silos a round is aggregated from")
    p.add_argument("--round-timeout", type=float, help="seconds to wait for the silos each round")
    add_engine_flags(p, {"--epsilon": "privacy budget per silo (default: inf, explicitly non-private)",
                         "--delta": "privacy delta (default: 1/n² capped at 1e-5)",
                         "--privacy-unit": "column identifying a person within a silo (default: each row is one)",
                         "--seed": "random seed (default: 0)",
                         "--set": "any config value by dotted key, federated.* included (repeatable)"})
    p.add_argument("--plan", help="use this public federation plan instead of building one (its engine config "
                                  "is the run's; the federated settings still come from flags and --config)")
    p.add_argument("--write-plan", metavar="FILE", help="build the public plan, write it to FILE and stop")
    add_address_flag(p, "Ray cluster to run the simulation on",
                     old_names=("--ray-address",))
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray started for the simulation "
                                                 "(default: all of this machine's)")
    show_config_defaults(p, _federated_defaults())
    p.set_defaults(func=run)
    return p


def _federated_defaults() -> dict[str, Any]:
    import dataclasses

    from cadasg_dist.federation.config import FederatedConfig

    return {f"federated.{k}": v for k, v in dataclasses.asdict(FederatedConfig()).items()}


def build_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """``CADASGConfig`` and ``FederatedConfig`` from ``--config`` and the flags (``--set`` last)."""
    from cadasg_dist.federation.config import load_configs

    cfg, fed = load_configs(args.config, flag_values(args))
    if getattr(args, "codebook", None):
        from cadasg_dist.data.codebook import Codebook

        cfg = Codebook.from_yaml(args.codebook).apply_to(cfg)
    return cfg, fed


@contextlib.contextmanager
def _library_logging() -> Iterator[None]:
    """One line per round from the library; Flower's own console handler only (without this, a
    root handler installed by an imported package prints every Flower line twice). Undone when the
    command returns, so a second command in the same process (a test, a notebook) starts clean."""
    lib, flwr = logging.getLogger("cadasg_dist"), logging.getLogger("flwr")
    saved = (lib.level, lib.propagate, flwr.propagate)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("cadasg: %(message)s"))
    lib.setLevel(logging.INFO)
    lib.addHandler(handler)
    lib.propagate = flwr.propagate = False
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.level, lib.propagate, flwr.propagate = saved


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a redirected or captured stream too)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def run(args: argparse.Namespace) -> int:
    with _library_logging():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from cadasg_dist.federation.apps import run_simulation
    from cadasg_dist.federation.simulation import prepare_run

    cfg, fed = build_configs(args)
    if not args.plan:  # a plan carries its engine config, the target included
        require_target(cfg, "the column whose relationship to the others must be kept")
    if args.silo_column is None and args.silos is None:
        raise CADASGError("give DATA with --silo-column COL (and the silo names), or --silos DIR (one file per silo)")
    if args.silo_column and not args.data:
        raise CADASGError("--silo-column needs the DATA table to split")
    if not args.write_plan and not args.out:
        raise CADASGError("--out is required (or --write-plan FILE to only build the public plan)")
    check_overwrite(None if args.write_plan else args.out, args.force)
    check_overwrite(args.write_plan, args.force, "--write-plan")
    settings = prepare_run(cfg, fed, data=args.data, silo_column=args.silo_column, silos=args.silos,
                           plan_path=args.plan, out=args.out)
    if args.write_plan:
        Path(args.write_plan).write_text(settings.plan.to_json())
        print(f"federation plan for {settings.num_silos} silos written to {args.write_plan}")
        return 0
    print(f"federated run: {settings.num_silos} silos ({', '.join(s['name'] for s in settings.sources)}), "
          f"{fed.rounds} rounds x {fed.local_epochs} local epochs, {fed.strategy}, "
          f"SecAgg+ {'on' if fed.secagg else 'off'}", file=sys.stderr, flush=True)
    run_simulation(settings, ray_address=args.address, num_cpus=args.num_cpus)
    return report(Path(args.out))


def report(out: Path) -> int:
    from cadasg_dist.synthesizer import CADASG

    model = CADASG.load(out)
    meta = model.meta["federated"]
    skipped = [r["round"] for r in meta["rounds"] if r["phase"] == "train" and not r["aggregated"]]
    dropped = sum(r["dropped"] for r in meta["rounds"])
    private = model.ledger.private
    rows = f"~{model.meta['training_rows']} rows (noisy counts)" if private else f"{model.meta['training_rows']} rows"
    print(f"federated model written to {out}: {len(meta['silos'])} silos, {rows}, "
          f"{len(model.contexts)} contexts, {meta['seconds']:.1f}s; {dropped} silo dropouts, skipped rounds: "
          f"{skipped or 'none'}")
    for name, silo in meta["silos"].items():
        size = f"~{silo['noisy_rows']} rows (noisy count)" if "noisy_rows" in silo else f"{silo['rows']} rows"
        eps = silo["epsilon"]
        print(f"  silo {name}: {size}, " + ("NOT PRIVATE (epsilon = inf)" if eps is None or math.isinf(eps)
                                            else f"epsilon={eps:.3f}"))
    from cadasg_dist.federation.accounting import guarantee_lines

    for line in guarantee_lines(meta, model.ledger):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cadasg_dist.cli.federated DATA ...``: the subcommand on its own (same flags)."""
    return run_alone("federated", add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
