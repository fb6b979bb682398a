"""CA-DASG: Context-Aware Distribution-Adaptive Synthetic Generator.

    from cadasg_dist import CADASG, CADASGConfig
    model = CADASG(CADASGConfig(epochs=...)).fit(df, context=["year", "female"], target="hospvis")
    synthetic = model.sample(10_000, context={"female": 1}, seed=7)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["CADASG", "CADASGConfig", "__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import cadasg_dist` cheap (the CLI's error paths should not load torch).
    if name == "CADASG":
        from cadasg_dist.synthesizer import CADASG

        return CADASG
    if name == "CADASGConfig":
        from cadasg_dist.config import CADASGConfig

        return CADASGConfig
    if name == "evaluate":
        from cadasg_dist.evaluate import evaluate

        return evaluate
    raise AttributeError(name)
