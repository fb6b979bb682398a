"""The ``cadasg`` command line.

    cadasg train DATA --target COL --context COL[,COL] [--epochs N] [--epsilon E] [--config FILE] --out DIR
                 [--num-workers N [--use-gpu] [--address auto|ray://HOST:PORT]]
    cadasg sample DIR --n N [--context COL=VALUE ...] [--seed S] --out FILE.csv|FILE.parquet
    cadasg evaluate --real HOLDOUT --synthetic SYN [--train TRAIN] [--model DIR] --target COL --context COLS --out DIR
    cadasg privacy DIR
    cadasg demo [--out DIR]
    cadasg serve DIR | cadasg federated DATA | cadasg tune DATA   (serving/, federated/, docs/tuning.md)

Flags parse into ``CADASGConfig`` (the one source of defaults): a flag left out keeps the value of
``--config`` or the dataclass default. A user error prints one line and exits with code 2, and
nothing is left half-written (tables and model directories are written to a temporary name and
renamed into place).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cadasg_dist.errors import CADASGError

EXIT_USAGE = 2


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_epsilon(value: str) -> float:
    """argparse type for --epsilon: a positive number, or inf for explicitly non-private."""
    try:
        eps = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--epsilon must be a number or inf, got {value!r}") from None
    if not eps > 0:
        raise argparse.ArgumentTypeError(f"--epsilon must be > 0 (inf for non-private), got {value!r}")
    return eps


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML run config (see configs/); flags override it")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--epsilon", type=parse_epsilon, help="privacy budget ε (inf = explicitly non-private)")
    p.add_argument("--delta", type=float, help="privacy δ (default 1/n² capped at 1e-5)")
    p.add_argument("--privacy-unit", help="column whose value identifies a person (e.g. a patient id)")
    p.add_argument("--seed", type=int, help="random seed (same seed and data give the same model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config value by dotted key, e.g. --set model.latent_dim=16 (repeatable)")


def build_config(args: argparse.Namespace) -> Any:
    from cadasg_dist.config import CADASGConfig, parse_overrides

    cfg = CADASGConfig.from_yaml(args.config) if args.config else CADASGConfig()
    overrides: dict[str, Any] = {}
    flag_keys = {"epochs": "train.epochs", "epsilon": "privacy.epsilon", "delta": "privacy.delta",
                 "privacy_unit": "privacy.unit", "seed": "train.seed", "target": "target"}
    for flag, key in flag_keys.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "context", None):
        overrides["context.columns"] = _csv_list(args.context)
    overrides.update(parse_overrides(args.set))
    return cfg.replace(**overrides) if overrides else cfg


class Progress:
    """One status line per epoch: epoch, seconds, the main losses and the current λ's."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, report: Any) -> None:
        line = self.line(report)
        if self.tty:
            end = "\n" if report.epoch == report.epochs else ""
            print("\r" + line, end=end, file=self.stream, flush=True)
        elif self.due(report):
            print(line, file=self.stream, flush=True)

    @staticmethod
    def line(report: Any) -> str:
        m = report.metrics
        width = 24
        done = int(width * report.epoch / report.epochs)
        bar = "#" * done + "-" * (width - done)
        eps = "" if report.epsilon is None else f" ε={report.epsilon:.2f}"
        return (f"[{bar}] epoch {report.epoch}/{report.epochs} {report.seconds:6.1f}s"
                f" | critic {m.get('loss_critic', 0):+.3f} vae {m.get('loss_vae', 0):.3f}"
                f" cov {m.get('loss_cov', 0):.3f} util {m.get('loss_utility', 0):.3f}"
                f" | λkl {m.get('lambda_kl', 0):.2f} λcov {m.get('lambda_cov', 0):.2f}"
                f" λu {m.get('lambda_utility', 0):.2f}{eps}")

    @staticmethod
    def due(report: Any) -> bool:
        """Without a terminal: about ten lines a run, plus the first and the last epoch."""
        every = max(1, report.epochs // 10)
        return report.epoch % every == 0 or report.epoch in (1, report.epochs)


def cmd_train(args: argparse.Namespace) -> int:
    from cadasg_dist.synthesizer import CADASG

    cfg = build_config(args)
    if cfg.target is None:
        raise CADASGError("--target is required: the column whose relationship to the others must be kept")
    if args.num_workers is not None:  # Ray Train: cadasg_dist/distributed/
        from cadasg_dist.distributed_command import fit_on_ray

        model = fit_on_ray(cfg, args)  # rank 0 prints the epochs live, through Ray's log relay
    else:
        model = CADASG(cfg).fit(args.data, progress=Progress())
    out = model.save(args.out)
    print(f"trained on {model.meta['training_rows']} rows in {model.meta['fit_seconds']:.1f}s; "
          f"{len(model.contexts)} contexts; {privacy_line(model.ledger)}")
    print(f"model written to {out}")
    return 0


def privacy_line(ledger: Any) -> str:
    if not ledger.private:
        return "NOT PRIVATE (epsilon = inf)"
    return f"(ε={ledger.epsilon():.3f}, δ={ledger.delta:.2e})-differentially private"


def _parse_context(items: list[str]) -> dict[str, str]:
    fixed: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise CADASGError(f"--context expects COLUMN=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        fixed[key.strip()] = value.strip()
    return fixed


def cmd_sample(args: argparse.Namespace) -> int:
    from cadasg_dist.data.io import SUFFIXES, write_table
    from cadasg_dist.synthesizer import CADASG

    if args.n <= 0:
        raise CADASGError(f"--n must be a positive number of rows, got {args.n}")
    if Path(args.out).suffix.lower() not in SUFFIXES:
        raise CADASGError(f"--out must end in .csv or .parquet, got {args.out}")
    model = CADASG.load(args.model)
    start = time.perf_counter()
    rows = model.sample(args.n, context=_parse_context(args.context), seed=args.seed)
    seconds = time.perf_counter() - start
    write_table(rows, args.out)
    print(f"{len(rows)} rows in {seconds:.2f}s ({len(rows) / max(seconds, 1e-9):,.0f} rows/s) -> {args.out}; "
          f"{privacy_line(model.ledger)}")
    return 0


def cmd_privacy(args: argparse.Namespace) -> int:
    from cadasg_dist.artifact import load_artifact
    from cadasg_dist.privacy.ledger import PrivacyLedger

    parts, _ = load_artifact(args.model)
    ledger = PrivacyLedger.from_state_dict(parts["ledger"])
    summary = ledger.summary()
    print(privacy_line(ledger))
    mechanisms = summary.get("mechanisms", [])
    width = min(28, max((len(m["name"]) for m in mechanisms), default=0))  # the step line may run over
    for mech in mechanisms:
        eps = mech.get("epsilon_alone")
        eps_text = "" if eps is None else f"  ε alone {eps:.3f}"
        print(f"  {mech['name']:<{width}} σ={mech['noise_multiplier']:<8.4g} q={mech['sample_rate']:<8.4g} "
              f"steps={mech['steps']:<6} sensitivity={mech['sensitivity']:.4g}{eps_text}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cadasg_dist.demo import run_demo

    return run_demo(out_dir=Path(args.out), epochs=args.epochs, seed=args.seed or 0, num_workers=args.num_workers)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cadasg", description="CA-DASG synthetic data generator")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a generator on a CSV/Parquet table")
    p.add_argument("data", help="CSV or Parquet file (or a directory of Parquet parts)")
    p.add_argument("--target", help="target column (its relationship to the rest is kept)")
    p.add_argument("--context", help="context column(s), comma-separated")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--num-workers", type=int, help="train on Ray Train with N workers, each on a shard of contexts")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per Ray worker")
    p.add_argument("--address", help="Ray cluster to join: auto or ray://HOST:PORT (default: start a local Ray)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample synthetic rows from a trained model")
    p.add_argument("model", help="model directory written by `cadasg train`")
    p.add_argument("--n", type=int, required=True, help="number of rows")
    p.add_argument("--context", action="append", default=[], metavar="COL=VALUE",
                   help="fix a context column (repeatable); the others follow their distribution")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same rows")
    p.add_argument("--out", required=True, help="output .csv or .parquet")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("privacy", help="print a model's privacy ledger")
    p.add_argument("model", help="model directory")
    p.set_defaults(func=cmd_privacy)

    p = sub.add_parser("demo", help="train on the bundled table, sample, and write a report")
    p.add_argument("--out", default="runs/demo", help="where the model, samples and report go")
    p.add_argument("--epochs", type=int, help="override the demo's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2,
                   help="Ray Train workers on a local Ray (default 2); 0 trains in this process")
    p.set_defaults(func=cmd_demo)

    from cadasg_dist import federated_command, serve_command, tune_command
    from cadasg_dist.evaluate import command as evaluate_command

    for command in (evaluate_command, serve_command, federated_command, tune_command):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CADASGError as exc:
        print(f"cadasg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cadasg: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "make_parser"]
