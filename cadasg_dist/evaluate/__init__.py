"""Evaluation of synthetic tables: fidelity, utility and privacy, overall and per context.

Privacy: evaluation reads real rows and its output (``EvaluationResult``, metrics.json,
report.html) describes them. It is NOT privacy-protected: it is for the data owner, not for
release, and using its numbers to select models spends privacy the ledger does not record.
Metric definitions: docs/metrics.md.
"""

from cadasg_dist.evaluate.evaluation import evaluate
from cadasg_dist.evaluate.report import write_report
from cadasg_dist.evaluate.result import (
    ContextFidelity,
    ContextRow,
    ContextUtility,
    EvaluationResult,
    FidelityResult,
    PrivacyResult,
    TargetRate,
    UtilityResult,
)

__all__ = ["ContextFidelity", "ContextRow", "ContextUtility", "EvaluationResult", "FidelityResult",
           "PrivacyResult", "TargetRate", "UtilityResult", "evaluate", "write_report"]
