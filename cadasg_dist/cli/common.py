"""What the subcommands share: the engine's flags, their parsing into ``CADASGConfig``, the exit
codes, the one-line error report, the output helpers (the privacy line, the epoch display), and the
conventions every subcommand follows: ``--address`` (the Ray cluster), ``--num-workers 0`` (in this
process), ``--force`` (to overwrite a model), help that shows each default, and checks of required
values before any table is read.

Flags parse into ``CADASGConfig`` (the one source of defaults) through ``config.flags.FLAG_KEYS``:
a flag left out keeps the value of ``--config`` or the dataclass default, and ``--set`` comes last.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from cadasg_dist.config import FLAG_KEYS, CADASGConfig, flag_overrides, parse_overrides
from cadasg_dist.errors import CADASGError, ConfigError
from cadasg_dist.train.progress import EpochLike, epoch_line, line_due

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Help of the engine flags that ``train``, ``tune`` and ``federated`` share; a subcommand may word one its own way.
# A flag left out keeps the config's value, so its argparse default is None and the help names the config's default.
ENGINE_HELP = {
    "--epsilon": "privacy budget ε (default: inf, explicitly non-private)",
    "--delta": "privacy δ (default: 1/n² capped at 1e-5)",
    "--privacy-unit": "column whose value identifies a person, e.g. a patient id (default: each row is a person)",
    "--seed": "random seed; same seed and data give the same model (default: 0)",
    "--set": "any config value by dotted key, e.g. --set model.latent_dim=16 (repeatable)",
}
TARGET_HELP = "target column, whose relationship to the others is kept (required, unless --config sets target)"
CONTEXT_HELP = "context column(s), comma-separated, e.g. year,female (default: none, one context)"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help, as ``ArgumentDefaultsHelpFormatter`` does, except where
    there is nothing to show (None, off, empty: the help text then says what leaving it out means),
    and descriptions kept as written (each subcommand's module docstring, ``plain_doc``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        empty = default is None or default is False or default is argparse.SUPPRESS or default in ([], "")
        if "default" in text or not action.option_strings or empty:
            return text
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """The parser of every subcommand (``add_subparsers(parser_class=...)``): ``HelpFormatter`` unless
    the subcommand asks for another."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def show_config_defaults(p: argparse.ArgumentParser, defaults: Mapping[str, Any]) -> None:
    """Name in each config flag's help the value it keeps when left out: ``defaults`` maps dotted
    config keys (``config.flags.FLAG_KEYS``) to the config's default. (The flag's own default stays
    None, so ``--config`` still wins over it.)"""
    for action in p._actions:
        key = FLAG_KEYS.get(action.dest)
        if key in defaults and action.help and "default" not in action.help:
            value = defaults[key]
            action.help += f" (default: {'off' if value is False else 'on' if value is True else value})"


def plain_doc(doc: str | None) -> str:
    """A module docstring as terminal text: ``code`` and :role:`text` markup reduced to the text."""
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", doc or "")
    return re.sub(r"``([^`]+)``", r"\1", text).strip()


class _VersionAction(argparse.Action):
    """``--version``: the installed version, read only when asked (reading it costs an import)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from cadasg_dist._version import __version__

        print(f"cadasg {__version__}")
        parser.exit()


def add_version_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action=_VersionAction, help="print the version and exit")


class _DeprecatedAlias(argparse.Action):
    """An old flag name kept working (hidden from help): stores into the new flag's value and says
    once on stderr which name to use."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"cadasg: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_address_flag(p: argparse.ArgumentParser, help_text: str, *, old_names: tuple[str, ...] = ()) -> None:
    """``--address``: the Ray cluster to join (one name in every subcommand); ``old_names`` keep
    working as hidden, deprecated aliases."""
    p.add_argument("--address", metavar="ADDRESS",
                   help=f"{help_text}: auto, HOST:PORT or ray://HOST:PORT (default: start a local Ray)")
    for old in old_names:
        p.add_argument(old, dest="address", action=_DeprecatedAlias, new="--address", help=argparse.SUPPRESS)


def add_num_workers_flag(p: argparse.ArgumentParser, help_text: str, default: int | None = None) -> None:
    """``--num-workers N``: N >= 1 Ray Train workers, 0 in this process (the same in every subcommand)."""
    p.add_argument("--num-workers", type=int, default=default, metavar="N", help=help_text)


def check_num_workers(n: int | None) -> None:
    if n is not None and n < 0:
        raise ConfigError(f"--num-workers {n}: use 0 to train in this process, or 1 or more Ray workers")


def add_force_flag(p: argparse.ArgumentParser, what: str = "an existing model directory --out") -> None:
    p.add_argument("--force", action="store_true", help=f"overwrite {what}")


def check_overwrite(out: str | Path | None, force: bool, flag: str = "--out") -> None:
    """Refuse to replace an existing model directory (or file) unless ``--force``; checked before
    any table is read, so a forgotten flag costs nothing."""
    if out is None or force:
        return
    path = Path(out)
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        raise ConfigError(f"{flag} {path} exists; pass --force to overwrite it, or choose another {flag}")


def require_target(cfg: CADASGConfig, why: str) -> None:
    """The target is required (by flag or ``--config``): refused before any table is read."""
    if cfg.target is None:
        raise ConfigError(f"--target is required: {why} (or set target: in --config)")


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
    p.add_argument("--epochs", type=int, help="training epochs (default: 0, chosen from the table's size)")
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


def privacy_line(ledger: Any, epsilon: float | None = None) -> str:
    """A model's guarantee in one line, or that it has none; ``epsilon``: the ledger's ε when known."""
    if not ledger.private:
        return "NOT PRIVATE (epsilon = inf)"
    return f"(ε={ledger.epsilon() if epsilon is None else epsilon:.3f}, δ={ledger.delta:.2e})-differentially private"


class Progress:
    """One status line per epoch (``train.progress.epoch_line``): redrawn in place on a terminal,
    else about ten lines a run."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def stage(self, line: str) -> None:
        """A line before the epochs start (``train.progress.reading_line``, ``preparing_line``)."""
        print(line, file=self.stream, flush=True)

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
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=CommandParser))
    return dispatch(parser.parse_args([name, *(sys.argv[1:] if argv is None else argv)]))
