"""The text of a training run's progress: the lines before the first epoch, one line per epoch
(with an estimate of the time left), and which epochs get a line.

Training loops report ``EpochReport``s (``train.fit``); what shows them (the CLI on a terminal,
rank 0 of a Ray Train run through Ray's log relay) renders them with these pure functions, so
every runner prints the same line. Privacy: a private run never reports the losses computed on
real rows (``private.step.REAL_ROW_METRICS``); the line says they are withheld rather than show
a zero that looks like a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

BAR_WIDTH = 24
WITHHELD = "withheld (DP)"


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
    """Epoch, seconds, the time left, the main losses and the current λ's (and ε spent, in a private
    run, whose losses on real rows are shown as withheld)."""
    m = report.metrics
    done = int(BAR_WIDTH * report.epoch / report.epochs)
    bar = "#" * done + "-" * (BAR_WIDTH - done)
    private = report.epsilon is not None
    eps = "" if not private else f" ε={report.epsilon:.2f}"
    if "loss_critic" in m or "loss_vae" in m or not private:
        losses = f"critic {m.get('loss_critic', math.nan):+.3f} vae {m.get('loss_vae', math.nan):.3f}"
    else:
        losses = f"critic, vae {WITHHELD}"
    return (f"[{bar}] epoch {report.epoch}/{report.epochs} {report.seconds:6.1f}s {eta_text(report)}"
            f" | {losses} cov {m.get('loss_cov', math.nan):.3f} util {m.get('loss_utility', math.nan):.3f}"
            f" | λkl {m.get('lambda_kl', math.nan):.2f} λcov {m.get('lambda_cov', math.nan):.2f}"
            f" λu {m.get('lambda_utility', math.nan):.2f}{eps}")


def eta_text(report: EpochLike) -> str:
    """``ETA 1m05s`` from the mean epoch so far (``done`` after the last epoch)."""
    left = report.epochs - report.epoch
    if left <= 0:
        return "done"
    return "ETA " + duration_text(report.seconds / max(report.epoch, 1) * left)


def duration_text(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def reading_line(source: str | Path) -> str:
    """The first line of a run, before anything is read (a large table takes a while)."""
    return f"reading {source} ..."


def preparing_line(rows: int, private: bool) -> str:
    """The line before preprocessing: the schema, contexts and transforms, inferred, or released
    under DP in a private run (whose exact row count is not printed: the run releases a noisy one)."""
    if private:
        return "preparing: releasing schema, contexts and transforms under DP ..."
    return f"preparing {rows:,} rows: inferring schema, contexts and transforms ..."


def line_due(report: EpochLike) -> bool:
    """Without a terminal to redraw one line on: about ten lines a run, plus the first and the last epoch."""
    every = max(1, report.epochs // 10)
    return report.epoch % every == 0 or report.epoch in (1, report.epochs)
