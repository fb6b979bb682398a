"""CA-DASG: Context-Aware Distribution-Adaptive Synthetic Generator.

Fit on a table with context columns and a target, then sample rows for any context (one epoch
here to keep the example fast; leave ``epochs`` at 0 for the automatic count):

>>> from cadasg_dist import CADASG, CADASGConfig
>>> from cadasg_dist.config import TrainConfig
>>> from cadasg_dist.datasets import load_rwm5yr
>>> df = load_rwm5yr().drop(columns=["id"])
>>> model = CADASG(CADASGConfig(train=TrainConfig(epochs=1))).fit(df, context=["year", "female"], target="hospvis")
>>> synthetic = model.sample(1_000, context={"female": 1}, seed=7)
>>> len(synthetic), synthetic["female"].unique().tolist()
(1000, [1])
"""

from __future__ import annotations

from typing import Any

__all__ = ["CADASG", "CADASGConfig", "Codebook", "__version__", "evaluate", "load_for_sampling"]


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import cadasg_dist` cheap (the CLI's error paths should not load torch; the
    # version is read from the installed metadata, which takes importlib.metadata).
    if name == "__version__":
        from cadasg_dist._version import __version__

        return __version__
    if name == "CADASG":
        from cadasg_dist.synthesizer import CADASG

        return CADASG
    if name == "CADASGConfig":
        from cadasg_dist.config import CADASGConfig

        return CADASGConfig
    if name == "Codebook":
        from cadasg_dist.data.codebook import Codebook

        return Codebook
    if name == "load_for_sampling":  # a saved model for sampling only: numpy, no torch
        from cadasg_dist.sampled import load_for_sampling

        return load_for_sampling
    if name == "evaluate":
        from cadasg_dist.evaluate import evaluate

        return evaluate
    raise AttributeError(name)
