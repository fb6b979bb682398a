"""The sampling half of a fitted model, shared by ``CADASG`` and ``SampledModel`` (a model loaded
for sampling only, without torch): ``sample``, ``sample_remaining``, ``sample_to_file``,
``feature_probs``, the contexts and the constraints.

A class using it holds ``config``, ``schema``, ``extractor``, ``transformer``, ``ledger`` and
``_constraints``, and provides ``dims``, ``_require_fitted`` and ``_sampling_pack``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import CADASGConfig
from cadasg_dist.constraints import ConstraintSet, build_constraints
from cadasg_dist.context.extractor import RuleContextExtractor
from cadasg_dist.data.schema import Schema
from cadasg_dist.data.transforms import DataTransformer
from cadasg_dist.model.dims import ModelDims
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.sampling import CHUNK_ROWS, run, stream
from cadasg_dist.sampling.draw import Sampler, largest_remainder
from cadasg_dist.sampling.pack import SamplingPack
from cadasg_dist.sampling.stream import SampleResult


class Sampling:
    history: list[dict[str, float]]
    _sampler: Sampler | None = None
    _pack: SamplingPack | None = None
    _constraints: ConstraintSet | None = None
    last_seed: int | None = None  # the seed of the last draw (fresh when none was given)

    def _require_fitted(self) -> None:
        raise NotImplementedError

    def _sampling_pack(self) -> SamplingPack:
        raise NotImplementedError

    @property
    def sampler(self) -> Sampler:
        """The model's sampler (its pack and marginal calibration, built once per model)."""
        self._require_fitted()
        if self._sampler is None:
            self._sampler = Sampler(self, self._sampling_pack())
        elif self._sampler.model is not self:  # a copy (copy.copy) draws with its own constraints
            self._sampler = self._sampler.bound_to(self)
        return self._sampler

    @property
    def _calibration(self) -> Any:
        """The marginal calibration the sampler fitted (None before the first draw)."""
        return None if self._sampler is None else self._sampler.pack.calibration

    def cell_allocation(self, n: int, context: dict[str, Any] | None, rng: np.random.Generator) -> np.ndarray:
        """Cache cell (context x target stratum) of each of ``n`` rows: the matching cells' shares of
        the cache's noisy counts, allocated exactly (largest remainder) and shuffled, so context
        and class shares match the cache at any n."""
        ids = self.extractor.resolve(context) if context else np.arange(self.extractor.n_contexts)
        strata = self.dims.strata
        cells = (ids[:, None] * strata + np.arange(strata)[None, :]).ravel()
        weights = self.sampler.pack.cell_counts[cells]
        if weights.sum() <= 0:
            weights = np.ones(len(cells))
        return rng.permutation(np.repeat(cells, largest_remainder(weights, n)))

    def sample(self, n: int, *, conditions: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
               seed: int | None = None, chunk: int = CHUNK_ROWS) -> pd.DataFrame:
        """``n`` synthetic rows. ``conditions`` fixes values of any columns (see below), ``context``
        some or all context columns; ``seed=None`` draws a fresh seed, reported as ``last_seed``;
        the same seed (and chunk) gives the same rows. The rows are built in memory: a request larger
        than the memory available is refused (``sample_to_file`` streams any n).

        Conditions (``cadasg_dist/sampling/conditions.py``): a context column or the target's class
        (a numeric target's value bin) restricts the draw to its cells: exact and free. Another
        categorical column is met exactly by rejection. A number takes a range ``(lo, hi)``
        (either end None), kept by rejection, or one value inside the column's modelled range: an
        integer column keeps rows drawn with that value; a continuous one keeps rows drawn within
        half a quantile step of it and pins the column to the value. A condition met by under
        0.2% of drawn rows is refused with the rate achieved."""
        rows, self.last_seed = run.draw(self, self.sampler, n, conditions=conditions, context=context, seed=seed,
                                        chunk=chunk)
        return rows

    def sample_remaining(self, known: pd.DataFrame, *, seed: int | None = None, chunk: int = CHUNK_ROWS
                         ) -> pd.DataFrame:
        """Complete the partial rows of ``known`` (SDV's ``sample_remaining_columns``): each row's
        present values are conditions as in ``sample``, its missing cells are generated; the result
        keeps ``known``'s index and order and holds every output column."""
        rows, self.last_seed = run.remaining(self, self.sampler, known, seed=seed, chunk=chunk)
        return rows

    def sample_to_file(self, path: str | Path, n: int, *, chunk: int = CHUNK_ROWS, seed: int | None = None,
                       conditions: dict[str, Any] | None = None, context: dict[str, Any] | None = None
                       ) -> SampleResult:
        """Write ``n`` rows to ``path`` (.parquet: a row group per chunk; .csv) in bounded memory, the
        seed recorded in the file's metadata (a CSV's sidecar ``.meta.json``); see ``sample``."""
        result = stream.to_file(self, self.sampler, path, n, chunk=chunk, seed=seed, conditions=conditions,
                                context=context)
        self.last_seed = result.seed
        return result

    def feature_probs(self, cell: np.ndarray, rng: np.random.Generator, *, calibrated: bool = True) -> np.ndarray:
        """(N, D) decoder output for rows of the given cells, activated (softmax spans as
        probabilities), the target pinned to each cell's class and, unless ``calibrated`` is False
        or ``model.calibrate_marginals`` is "off", the marginal calibration applied. Draws the latent
        codes from ``rng``; ``sample`` decodes the result."""
        return self.sampler.feature_probs(np.asarray(cell, dtype=np.int64), rng, calibrated=calibrated)

    @property
    def contexts(self) -> list[dict[str, Any]]:
        self._require_fitted()
        return [self.extractor.describe(i) for i in range(self.extractor.n_contexts)]

    @property
    def constraints(self) -> ConstraintSet:
        """The rules every sampled row satisfies (config ``constraints`` and ``add_constraints``);
        ``.describe()`` lists them, ``.stats`` counts the rows drawn, redrawn and repaired."""
        if self._constraints is None:
            if self.schema is None or self.extractor is None:
                return ConstraintSet()
            self._constraints = build_constraints(self.config, self.schema, self.extractor)
        return self._constraints

    @constraints.setter
    def constraints(self, value: ConstraintSet) -> None:
        self._constraints = value

    def loss_history(self) -> pd.DataFrame:
        """One row per epoch (per round for a federated model) of the training metrics, as saved with
        the model. A private run never records the losses computed on real rows (``loss_vae``,
        ``loss_critic``, ``loss_predictor``): those columns are absent. A model saved before the
        artifact kept every epoch has its last epoch only. Columns: the epoch (or round), then the
        metrics by name, alike before and after ``save``/``load``."""
        if not self.history:
            return pd.DataFrame({"epoch": []})
        frame = pd.DataFrame.from_records(self.history)
        first = [c for c in ("epoch", "round") if c in frame.columns]
        return frame[first + sorted(c for c in frame.columns if c not in first)]

    @property
    def epsilon(self) -> float:
        """The model's ε at its δ: read from the artifact when it was saved with it (composing the
        ledger imports Opacus, which takes seconds), else composed from the ledger."""
        if not self.ledger.private:
            return math.inf
        saved = self.meta.get("epsilon")
        return float(saved) if saved is not None else self.ledger.epsilon()


def read_parts(model: Sampling, parts: dict[str, Any], tensors: dict[str, dict[str, np.ndarray]]) -> ModelDims:
    """Fill ``model``'s sampling half from a loaded artifact (``artifact.load_artifact``): config,
    schema, transforms, contexts, ledger, constraints, metadata and, when saved, the sampling pack;
    returns the model's dims. Raises what the parts' own readers raise on an inconsistent artifact."""
    model.config = CADASGConfig.from_dict(parts["config"])
    model.schema = Schema.from_dict(parts["schema"])
    model.transformer = DataTransformer.from_dict(model.schema, parts["transformer"])
    model.extractor = RuleContextExtractor.from_dict(parts["context"], model.schema)
    model.ledger = PrivacyLedger.from_state_dict(parts["ledger"])
    if "constraints" in parts:
        model.constraints = ConstraintSet.from_dict(parts["constraints"])
    dims = ModelDims.from_dict(parts["dims"])
    if "sampler" in parts and "sampler" in tensors:
        model._pack = SamplingPack.from_parts(parts["sampler"], tensors["sampler"], dims)
    model.meta = parts["meta"]
    model.history = list(model.meta.get("history") or [])  # artifacts before the full history: the last epoch
    return dims
