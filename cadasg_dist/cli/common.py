"""What the subcommands share: the engine's flags, their parsing into ``CADASGConfig``, the exit
codes, the one-line error report, and the output helpers (the privacy line, the epoch display).

Flags parse into ``CADASGConfig`` (the one source of defaults) through ``config.flags.FLAG_KEYS``:
a flag left out keeps the value of ``--config`` or the dataclass default, and ``--set`` comes last.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from cadasg_dist.config import CADASGConfig, flag_overrides, parse_overrides
from cadasg_dist.errors import CADASGError
from cadasg_dist.train.progress import EpochLike, epoch_line, line_due

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Help of the engine flags that ``train``, ``tune`` and ``federated`` share; a subcommand may word one its own way.
ENGINE_HELP = {
    "--epsilon": "privacy budget ε (inf = explicitly non-private)",
    "--delta": "privacy δ (default 1/n² capped at 1e-5)",
    "--privacy-unit": "column whose value identifies a person (e.g. a patient id)",
    "--seed": "random seed (same seed and data give the same model)",
    "--set": "any config value by dotted key, e.g. --set model.latent_dim=16 (repeatable)",
}


def parse_epsilon(value: str) -> float:
    """argparse type for --epsilon: a positive number, or inf for explicitly non-private."""
    try:
        eps = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--epsilon must be a number or inf, got {value!r}") from None
    if not eps > 0:
        raise argparse.ArgumentTypeError(f"--epsilon must be > 0 (inf for non-private), got {value!r}")
    return eps


def add_engine_flags(p: argparse.ArgumentParser, helps: Mapping[str, str] | None = None) -> None:
    """--epsilon, --delta, --privacy-unit, --seed and --set, worded by ``helps`` where it has the flag."""
    text = {**ENGINE_HELP, **(helps or {})}
    p.add_argument("--epsilon", type=parse_epsilon, help=text["--epsilon"])
    p.add_argument("--delta", type=float, help=text["--delta"])
    p.add_argument("--privacy-unit", help=text["--privacy-unit"])
    p.add_argument("--seed", type=int, help=text["--seed"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=text["--set"])


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """--config, --codebook, --epochs and the engine flags: what ``train`` and ``tune`` read into
    ``CADASGConfig``."""
    p.add_argument("--config", help="YAML run config (see configs/); flags override it")
    p.add_argument("--codebook", metavar="FILE",
                   help="confirmed codebook (cadasg schema): column kinds, categories and bounds, declared public; "
                        "the config's own data.columns entries win")
    p.add_argument("--epochs", type=int, help="training epochs")
    add_engine_flags(p)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config keys the flags set, ``--set`` last (it wins over a flag)."""
    return {**flag_overrides(vars(args)), **parse_overrides(args.set)}


def build_config(args: argparse.Namespace) -> CADASGConfig:
    """``--config`` (or the defaults) with the flags applied, then ``--codebook``'s declarations
    under the config's own ``data.columns`` entries."""
    cfg = CADASGConfig.from_yaml(args.config) if args.config else CADASGConfig()
    overrides = flag_values(args)
    cfg = cfg.replace(**overrides) if overrides else cfg
    if getattr(args, "codebook", None):
        from cadasg_dist.data.codebook import Codebook

        cfg = Codebook.from_yaml(args.codebook).apply_to(cfg)
    return cfg


def privacy_line(ledger: Any) -> str:
    """A model's guarantee in one line, or that it has none."""
    if not ledger.private:
        return "NOT PRIVATE (epsilon = inf)"
    return f"(ε={ledger.epsilon():.3f}, δ={ledger.delta:.2e})-differentially private"


class Progress:
    """One status line per epoch (``train.progress.epoch_line``): redrawn in place on a terminal,
    else about ten lines a run."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, report: EpochLike) -> None:
        line = epoch_line(report)
        if self.tty:
            end = "\n" if report.epoch == report.epochs else ""
            print("\r" + line, end=end, file=self.stream, flush=True)
        elif line_due(report):
            print(line, file=self.stream, flush=True)


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed subcommand: a user error is one line on stderr and exit code 2."""
    try:
        return int(args.func(args) or 0)
    except CADASGError as exc:
        print(f"cadasg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cadasg: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_alone(name: str, add_parser: Callable[[Any], argparse.ArgumentParser], argv: list[str] | None) -> int:
    """One subcommand on its own (``python -m cadasg_dist.cli.NAME ARGS``), with the same flags and exits."""
    parser = argparse.ArgumentParser(prog="cadasg")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser.parse_args([name, *(sys.argv[1:] if argv is None else argv)]))
