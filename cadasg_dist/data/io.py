"""Reading and writing tables (CSV and Parquet) and text files, atomically on write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from cadasg_dist.errors import InvalidDataError

SUFFIXES = (".csv", ".parquet", ".pq")


def read_table(path: str | Path, *, allow_empty: bool = False) -> pd.DataFrame:
    """Read a CSV or Parquet file (or a directory of Parquet parts) into a DataFrame.

    Raises ``InvalidDataError`` with one line for a missing, unreadable or empty file;
    ``allow_empty`` accepts a table with columns and no rows (a declared federated silo's own file
    may hold none).
    """
    p = Path(path)
    if not p.exists():
        raise InvalidDataError(f"data file not found: {p}")
    try:
        if p.is_dir() or p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif p.suffix.lower() == ".csv":
            df = pd.read_csv(p)
        else:
            raise InvalidDataError(f"cannot read {p}: use a .csv or .parquet file")
    except InvalidDataError:
        raise
    except pd.errors.EmptyDataError:
        raise InvalidDataError(f"data file {p} is empty") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a user error here
        raise InvalidDataError(f"cannot read {p}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if df.shape[1] == 0 or (df.shape[0] == 0 and not allow_empty):
        raise InvalidDataError(f"data file {p} has no rows")
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to CSV or Parquet by suffix, through a temporary file and a rename.

    A failure leaves no partial file behind.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidDataError(f"cannot write {p}: the file name must end in .csv or .parquet")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) through a temporary file and a rename: a failure leaves no partial file."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
