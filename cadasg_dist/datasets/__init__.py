"""Tables shipped with the package (see README.md in this folder for sources and credits)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def load_rwm5yr() -> pd.DataFrame:
    """German health panel 1984-1988 (R package COUNT): one person in one year."""
    return pd.read_parquet(HERE / "rwm5yr.parquet")
