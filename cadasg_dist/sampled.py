"""A saved model loaded to sample only: ``load_for_sampling(DIR)``.

It reads the artifact's plain-data parts and its sampling pack (``sampling.pack``) with numpy: no
networks are built and torch is not imported, so ``cadasg sample``, a Serve replica or a Ray
sampling task starts in a fraction of the time and memory. It samples exactly as the ``CADASG``
it was saved from (the same pack, so the same rows for a seed). A model saved before artifacts
carried the pack is loaded whole (``CADASG.load``), which folds the pack again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cadasg_dist.artifact import load_artifact
from cadasg_dist.errors import ArtifactError
from cadasg_dist.model.dims import ModelDims
from cadasg_dist.sampling.api import Sampling, read_parts
from cadasg_dist.sampling.pack import SamplingPack


class SampledModel(Sampling):
    """The sampling half of a ``CADASG``: ``sample``, ``sample_remaining``, ``sample_to_file``,
    ``contexts``, ``constraints``, ``ledger``, ``epsilon``, ``meta`` and ``loss history``; no fit."""

    def __init__(self, pack: SamplingPack | None = None) -> None:
        self.config: Any = None
        self.schema: Any = None
        self.extractor: Any = None
        self.transformer: Any = None
        self.ledger: Any = None
        self.meta: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []
        self._dims: ModelDims | None = None
        self._pack = pack

    @property
    def dims(self) -> ModelDims:
        return self._dims

    def _require_fitted(self) -> None:  # loaded from an artifact: always fitted
        return None

    def _sampling_pack(self) -> SamplingPack:
        return self._pack


def load_for_sampling(model_dir: str | Path) -> Sampling:
    """The model at ``model_dir`` for sampling: a ``SampledModel`` (numpy only) when the artifact
    holds its sampling pack, else the whole ``CADASG``."""
    parts, tensors = load_artifact(model_dir)
    if "sampler" not in parts or "sampler" not in tensors:
        from cadasg_dist.synthesizer import CADASG  # an older artifact: fold the pack from the networks

        return CADASG.load(model_dir)
    model = SampledModel()
    try:
        model._dims = read_parts(model, parts, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{model_dir}: inconsistent artifact ({type(exc).__name__}: {exc})") from None
    return model
