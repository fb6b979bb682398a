"""One entry of the config's ``constraints`` list: a rule every synthetic row satisfies.

The rules themselves (checking and repairing rows) live in ``cadasg_dist/constraints/``; this is the
declaration, checked on its own here (``problem``) and against the table at fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

ConstraintKind = Literal["range", "inequality", "combinations", "band"]
Inclusive = Literal["both", "neither", "left", "right"]


@dataclass(frozen=True)
class ConstraintConfig:
    """One rule every synthetic row satisfies (``cadasg_dist/constraints/``; docs/guides/constraints.md).

    ``kind`` picks the rule and the keys it reads: ``range`` (``column``, ``low`` and/or ``high``,
    ``inclusive``), ``inequality`` (``a``, ``b``, ``strict``, ``offset``: ``a + offset <= b``, or ``<``),
    ``combinations`` (``columns``, ``allowed``) and ``band`` (``column``, ``context``, ``bands``).
    Sampling redraws a violating row from its cell a bounded number of times, then repairs it
    deterministically. Declared, so public: a constraint reads no row, except ``combinations``
    without ``allowed`` in a non-private fit, which reads the combinations seen in the table.
    A missing value satisfies every rule (missingness is modelled as it is).
    """

    # The rule: range | inequality | combinations | band.
    kind: ConstraintKind | None = None
    # range: the numeric column held in [low, high]; band: the numeric column its band label bounds.
    column: str | None = None
    # range: the lower bound (null: none).
    low: float | None = None
    # range: the upper bound (null: none).
    high: float | None = None
    # range: which ends are inside, as pandas' between (null: "both"); band: the same for each
    # [low, high] pair of `bands` (null: "left", [low, high) as context.bands cuts them).
    inclusive: Inclusive | None = None
    # inequality: the column on the small side of a + offset <= b.
    a: str | None = None
    # inequality: the column on the large side of a + offset <= b.
    b: str | None = None
    # inequality: a + offset < b instead of <=.
    strict: bool = False
    # inequality: added to a before the comparison (seconds for datetime columns).
    offset: float = 0.0
    # combinations: the categorical columns whose joint values are restricted.
    columns: tuple[str, ...] = ()
    # combinations: the allowed value tuples, one value per column in `columns` order; null reads
    # them from the table in a non-private fit (a private run must declare them).
    allowed: tuple[tuple[Any, ...], ...] | None = None
    # band: the categorical (usually context) column whose label names each row's band of `column`.
    context: str | None = None
    # band: label -> [low, high] of `column`; null parses each label as an interval ("[40, 55)",
    # "40-54", "<40", "65+").
    bands: dict[str, tuple[float, ...]] | None = None

    def problem(self) -> str | None:
        """What is wrong with this entry on its own (the columns are checked against the table at
        fit), or None."""
        kinds = ("range", "inequality", "combinations", "band")
        if self.kind not in kinds:
            return f"kind must be one of {', '.join(kinds)}, got {self.kind!r}"
        if self.inclusive not in (None, "both", "neither", "left", "right"):
            return f"inclusive must be both, neither, left or right, got {self.inclusive!r}"
        need = {"range": ("column",), "inequality": ("a", "b"), "band": ("column", "context")}.get(self.kind, ())
        missing = [key for key in need if not getattr(self, key)]
        if missing:
            return f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} constraint needs {' and '.join(missing)}"
        if self.kind == "range":
            return _range_problem(self.low, self.high, self.inclusive or "both")
        if self.kind == "inequality":
            return f"a and b must be two different columns, got {self.a!r} twice" if self.a == self.b else None
        if self.kind == "combinations":
            return _combinations_problem(self.columns, self.allowed)
        return _bands_problem(self.bands, self.inclusive or "left")


def _range_problem(low: float | None, high: float | None, inclusive: str) -> str | None:
    if low is None and high is None:
        return "a range constraint needs low, high or both"
    if low is not None and high is not None:
        if low > high or (low == high and inclusive != "both"):
            return f"low must be below high, got low={low:g}, high={high:g} (inclusive={inclusive})"
    return None


def _combinations_problem(columns: tuple[str, ...], allowed: tuple[tuple[Any, ...], ...] | None) -> str | None:
    if len(columns) < 2 or len(set(columns)) != len(columns):
        return f"a combinations constraint needs >= 2 different columns, got {list(columns)}"
    if allowed is not None:
        if not allowed:
            return "allowed is empty: list the combinations that may appear (or null to read them from the table)"
        bad = next((row for row in allowed if len(row) != len(columns)), None)
        if bad is not None:
            return f"each allowed combination needs {len(columns)} values ({', '.join(columns)}), got {list(bad)}"
    return None


def _bands_problem(bands: dict[str, tuple[float, ...]] | None, inclusive: str) -> str | None:
    for label, pair in (bands or {}).items():
        lo, hi = (pair[0], pair[1]) if len(pair) == 2 else (math.nan, math.nan)
        if not (lo <= hi) or (lo == hi and inclusive != "both"):
            return f"bands[{label!r}] must be [low, high] with low below high, got {list(pair)}"
    return None
