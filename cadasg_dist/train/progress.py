"""The text of a training run's progress: one line per epoch, and which epochs get a line.

Training loops report ``EpochReport``s (``train.fit``); what shows them (the CLI on a terminal,
rank 0 of a Ray Train run through Ray's log relay) renders them with these pure functions, so
every runner prints the same line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

BAR_WIDTH = 24


class EpochLike(Protocol):
    """The fields of an ``EpochReport`` that a progress line reads."""

    @property
    def epoch(self) -> int: ...

    @property
    def epochs(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def metrics(self) -> Mapping[str, float]: ...

    @property
    def epsilon(self) -> float | None: ...


def epoch_line(report: EpochLike) -> str:
    """Epoch, seconds, the main losses and the current λ's (and ε spent, in a private run)."""
    m = report.metrics
    done = int(BAR_WIDTH * report.epoch / report.epochs)
    bar = "#" * done + "-" * (BAR_WIDTH - done)
    eps = "" if report.epsilon is None else f" ε={report.epsilon:.2f}"
    return (f"[{bar}] epoch {report.epoch}/{report.epochs} {report.seconds:6.1f}s"
            f" | critic {m.get('loss_critic', 0):+.3f} vae {m.get('loss_vae', 0):.3f}"
            f" cov {m.get('loss_cov', 0):.3f} util {m.get('loss_utility', 0):.3f}"
            f" | λkl {m.get('lambda_kl', 0):.2f} λcov {m.get('lambda_cov', 0):.2f}"
            f" λu {m.get('lambda_utility', 0):.2f}{eps}")


def line_due(report: EpochLike) -> bool:
    """Without a terminal to redraw one line on: about ten lines a run, plus the first and the last epoch."""
    every = max(1, report.epochs // 10)
    return report.epoch % every == 0 or report.epoch in (1, report.epochs)
