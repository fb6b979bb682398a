"""One column of a codebook (``data.codebook``): its kind, category set, bounds and identifier
guess, as plain data, with the YAML spelling of its values.

A column's entry becomes the ``ColumnOverride`` the config already understands
(``data.columns.X``), so whatever a codebook declares is public in the same sense as a config
declaration: free, never read from the rows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cadasg_dist.config import ColumnOverride
from cadasg_dist.errors import ConfigError

KINDS = ("continuous", "integer", "categorical", "boolean", "datetime", "identifier", "derived")
BOUNDED = ("continuous", "integer", "datetime", "categorical")  # a categorical's bounds: its integer codes
FIELDS = ("kind", "categories", "min", "max", "identifier", "of", "equals")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class CodebookColumn:
    """What a codebook says of one column. ``min``/``max`` of a datetime column are ISO texts;
    ``identifier`` is why the column looks like an identifier (``Codebook.detect``'s guess), or None."""

    name: str
    kind: str
    categories: tuple[Any, ...] | None = None
    min: float | str | None = None
    max: float | str | None = None
    identifier: str | None = None
    of: str | None = None  # a derived column's source column
    equals: Any = None  # the source value where a derived column is 1

    def to_dict(self) -> dict[str, Any]:
        """The entry without its name, unset fields left out."""
        out = {f: getattr(self, f) for f in FIELDS if getattr(self, f) is not None}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, name: str, raw: Any) -> CodebookColumn:
        """An entry from plain data (YAML), checked. Raises ``ConfigError`` naming the field and the fix."""
        where = f"columns.{name}"
        if not isinstance(raw, dict):
            raise ConfigError(f"codebook {where} must be a mapping such as {{kind: integer, min: 0, max: 120}}, "
                              f"got {raw!r}")
        unknown = sorted(set(raw) - set(FIELDS))
        if unknown:
            raise ConfigError(f"codebook {where} has unknown key {unknown[0]!r}; known keys: {', '.join(FIELDS)}")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"codebook {where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
        cats = raw.get("categories")
        if cats is not None:
            if kind not in ("categorical", "boolean") or not isinstance(cats, list):
                raise ConfigError(f"codebook {where}.categories must be a list, for a categorical or boolean column")
            bad = [c for c in cats if isinstance(c, dict | list) or c is None]
            if bad:
                raise ConfigError(f"codebook {where}.categories must hold single values, got {bad[0]!r}")
            cats = tuple(_plain_value(c) for c in cats)
        lo, hi = (_bound(raw.get(k), kind, f"{where}.{k}") for k in ("min", "max"))
        if (lo is not None or hi is not None) and kind not in BOUNDED:
            raise ConfigError(f"codebook {where}: a {kind} column has no bounds; drop min and max")
        if lo is not None and hi is not None and _seconds(lo) > _seconds(hi):
            raise ConfigError(f"codebook {where}: min {lo!r} is above max {hi!r}")
        derived = raw.get("of") is not None or raw.get("equals") is not None
        if (kind == "derived") != derived or (kind == "derived" and (raw.get("of") is None or "equals" not in raw)):
            raise ConfigError(f"codebook {where}: of and equals go together, with kind: derived only")
        why = raw.get("identifier")
        return cls(name=name, kind=kind, categories=cats, min=lo, max=hi,
                   identifier=None if why is None else str(why), of=None if raw.get("of") is None else str(raw["of"]),
                   equals=_plain_value(raw.get("equals")))

    def override(self) -> ColumnOverride:
        """The ``data.columns`` entry this column declares (datetime bounds as seconds since 1970)."""
        lo = None if self.min is None else _seconds(self.min)
        hi = None if self.max is None else _seconds(self.max)
        return ColumnOverride(kind=self.kind, min=lo, max=hi, categories=self.categories, of=self.of,  # type: ignore[arg-type]
                              equals=self.equals)

    def yaml_line(self) -> str:
        """``name: {kind: ..., ...}``: one flow mapping, each value spelled so YAML reads it back unchanged."""
        items = []
        for key, value in self.to_dict().items():
            text = "[" + ", ".join(yaml_scalar(v) for v in value) + "]" if key == "categories" else yaml_scalar(value)
            items.append(f"{key}: {text}")
        return f"{yaml_scalar(self.name)}: {{{', '.join(items)}}}"


def yaml_scalar(v: Any) -> str:
    """``v`` in YAML as it reads back: ints stay ints, booleans true / false, floats with a point
    (``1.0e+20``, which PyYAML reads as a number where it reads ``1e+20`` as text), and a string in
    double quotes wherever YAML would read it as something else ("yes", "no", "1e5", "010", "null")."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        text = repr(v)
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    text = str(v)
    if _PLAIN.fullmatch(text) and _reads_as_itself(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _reads_as_itself(text: str) -> bool:
    import yaml

    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def _plain_value(v: Any) -> Any:
    """A YAML value as a codebook holds it: dates as ISO text (YAML reads an unquoted date as one)."""
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    return v


def _bound(v: Any, kind: str, where: str) -> float | str | None:
    if v is None:
        return None
    if kind == "datetime":
        text = _plain_value(v) if not isinstance(v, int | float) else v
        try:
            _seconds(text)
        except (TypeError, ValueError):
            raise ConfigError(f"codebook {where} must be a date such as \"2020-01-31\", got {v!r}") from None
        return text
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"codebook {where} must be a number, got {v!r}")
    return v


def _seconds(v: float | str) -> float:
    """A bound as the schema holds it: a number, or a date as seconds since 1970 (UTC, like
    ``data.schema.datetime_to_seconds``)."""
    if isinstance(v, int | float):
        return float(v)
    stamp = pd.Timestamp(v)
    if stamp is pd.NaT:
        raise ValueError(v)
    return stamp.tz_convert(None).timestamp() if stamp.tzinfo is not None else stamp.timestamp()
