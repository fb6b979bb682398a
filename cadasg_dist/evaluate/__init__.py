"""Evaluation of synthetic tables: fidelity, utility and privacy, overall and per context.

Privacy: evaluation reads real rows and its output (``EvaluationResult``, metrics.json,
report.html) describes them. It is NOT privacy-protected: it is for the data owner, not for
release, and using its numbers to select models spends privacy the ledger does not record.
Metric definitions: docs/guides/evaluation.md.
"""

from typing import Any

__all__ = ["ContextFidelity", "ContextRow", "ContextUtility", "EvaluationResult", "FidelityResult",
           "PrivacyResult", "TargetRate", "UtilityResult", "evaluate", "write_report"]


def __getattr__(name: str) -> Any:
    # Lazy: scikit-learn and matplotlib take seconds to import, and `cadasg --help` or a CLI user
    # error should not wait for them.
    if name == "evaluate":
        from cadasg_dist.evaluate.evaluation import evaluate

        return evaluate
    if name == "write_report":
        from cadasg_dist.evaluate.report import write_report

        return write_report
    if name in __all__:
        from cadasg_dist.evaluate import result

        return getattr(result, name)
    raise AttributeError(name)
