"""The ``evaluate`` subcommand: read the tables, evaluate, write metrics.json and report.html.

    cadasg evaluate --real HOLDOUT --synthetic SYN [--train TRAIN] --model DIR --out REPORT_DIR
    cadasg evaluate --real HOLDOUT --synthetic SYN [--train TRAIN] --target COL --context COLS --out REPORT_DIR

With ``--model`` the model's own target and context columns are used (``--target`` and ``--context``
given as well win), with its schema and privacy ledger. Without a target no utility is measured, and
the summary says so.

Privacy: the report it writes describes real rows and is NOT privacy-protected; the printed
summary says so. User errors raise ``CADASGError`` subclasses, which the main CLI turns into one
line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cadasg_dist.cli.common import CONTEXT_HELP
from cadasg_dist.config import csv_list
from cadasg_dist.errors import ArtifactError

if TYPE_CHECKING:  # imported where used: building the ``cadasg`` parser must not load pandas
    from cadasg_dist.data.schema import Schema
    from cadasg_dist.evaluate.result import EvaluationResult


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "evaluate", help="fidelity, utility and privacy of a synthetic table vs real holdout rows",
        description="Compare a synthetic table with real HOLDOUT rows and write metrics.json and report.html. "
                    "The report describes real rows: it is NOT privacy-protected, keep it with the data owner.")
    p.add_argument("--real", required=True, metavar="HOLDOUT", help="real rows the generator never saw (CSV/Parquet)")
    p.add_argument("--synthetic", required=True, metavar="SYN", help="synthetic table (CSV/Parquet)")
    p.add_argument("--train", metavar="TRAIN", help="the table the generator trained on (for the utility "
                   "baseline and the privacy metrics)")
    p.add_argument("--model", metavar="DIR", help="saved model directory: its target, context columns, schema and "
                                                  "privacy ledger are used")
    p.add_argument("--target", metavar="COL", help="column to predict for the utility metrics (default: the "
                                                   "model's, with --model; none: no utility)")
    p.add_argument("--context", metavar="COL[,COL]", help=CONTEXT_HELP.replace("(default: none, one context)",
                                                                            "(default: the model's, with --model)"))
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="directory for metrics.json and report.html")
    p.add_argument("--seed", type=int, help="seed of every subsample and model (default: evaluate()'s)")
    p.set_defaults(func=run, run=run)  # the main CLI dispatches on ``func``
    return p


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; prints a short summary and the report path, returns 0."""
    from cadasg_dist.data.io import read_table
    from cadasg_dist.evaluate.evaluation import evaluate
    from cadasg_dist.evaluate.report import write_report

    schema, ledger = load_model_files(args.model) if args.model else (None, None)  # checked before any table
    target, context = model_columns(args.model) if args.model else (None, [])
    target = args.target or target
    context = csv_list(args.context) if args.context else context
    real = read_table(args.real)
    synthetic = read_table(args.synthetic)
    train = read_table(args.train) if args.train else None
    extra = {} if args.seed is None else {"seed": args.seed}
    result = evaluate(real, synthetic, target=target, context=context, train=train, schema=schema,
                      privacy=ledger, **extra)
    report = write_report(result, args.out, real=real, synthetic=synthetic)
    print(summary_text(result))
    if target is None:
        print("utility: not measured (no target: give --target COL, or --model DIR to use the model's)")
    print(f"report: {report}")
    print("(the report describes real rows: it is not privacy-protected, do not publish it)")
    return 0


def model_columns(model_dir: str | Path) -> tuple[str | None, list[str]]:
    """The target and context columns a saved model was trained with (``DIR/config.json``; none
    when a directory holds only a schema and a ledger)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None, []
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path} is not a CA-DASG config")
    context = (raw.get("context") or {}).get("columns") or []
    return raw.get("target"), [str(c) for c in context]


def load_model_files(model_dir: str | Path) -> tuple[Schema | None, dict[str, Any] | None]:
    """Schema from ``DIR/schema.json`` and (epsilon, delta) from ``DIR/ledger.json``, each if present."""
    from cadasg_dist.data.schema import Schema

    d = Path(model_dir)
    if not d.is_dir():
        raise ArtifactError(f"model directory not found: {d}")
    schema = None
    if (d / "schema.json").exists():
        raw = _read_json(d / "schema.json")
        try:
            schema = Schema.from_dict(raw)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"{d / 'schema.json'} is not a CA-DASG schema (missing {exc})") from None
    ledger = _ledger_summary(_read_json(d / "ledger.json"), d / "ledger.json") if (d / "ledger.json").exists() else None
    return schema, ledger


def _ledger_summary(raw: Any, path: Path) -> dict[str, Any]:
    """{"epsilon", "delta"} from a ledger summary, or from the saved ledger state of a model
    directory (``PrivacyLedger.state_dict()``), whose ε is recomputed from its mechanisms."""
    if isinstance(raw, dict) and "epsilon" in raw:
        return {"epsilon": raw["epsilon"], "delta": raw.get("delta")}
    if not isinstance(raw, dict) or "mechanisms" not in raw:
        raise ArtifactError(f"{path} is neither a ledger summary (epsilon, delta) nor a saved privacy ledger")
    from cadasg_dist.privacy import PrivacyLedger  # imported late: it pulls in the accounting libraries

    ledger = PrivacyLedger.from_state_dict(raw)  # raises ArtifactError on a malformed ledger
    return {"epsilon": ledger.epsilon() if ledger.private else math.inf, "delta": ledger.delta}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from None


def summary_text(r: EvaluationResult) -> str:
    """A few lines for the terminal."""
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [f"column shape {f(r.fidelity.column_shape)}, pair trend {f(r.fidelity.pair_trend)}"]
    if r.context:
        lines.append(f"worst context {f(r.per_context.min)}, size-weighted {f(r.per_context.weighted_mean)}, "
                     f"context frequency TV {f(r.context_frequency_tv)}")
    if r.utility is not None:
        u = r.utility
        lines.append(f"utility {u.metric}: real {f(u.real)}, synthetic {f(u.synthetic)}, ratio {f(u.ratio)}")
    p = r.privacy
    eps = "not reported" if p.epsilon is None else ("inf (not private)" if p.epsilon == float("inf")
                                                     else f"{p.epsilon:.3g}")
    exact = "n/a" if p.exact_match_rate is None else f"{100 * p.exact_match_rate:.2f}%"
    lines.append(f"privacy: epsilon {eps}, exact matches {exact}, DCR share {f(p.dcr_share)}, "
                 f"MIA AUC {f(p.mia_auc)}")
    return "\n".join(lines)

