"""Training in rounds of epochs, so a Tune trial can score the model between rounds.

``RoundTrainer`` drives the one training loop (``train.loop``) as ``train.fit.fit_local`` (the
non-private ``CADASG.fit``) does, but stops after any number of epochs, hands out a sampler of the
model as it stands (``snapshot``) and finishes with the same final cache pass;
tests/unit/test_tune_rounds.py checks that rounds of epochs give the very model ``CADASG.fit`` gives.

Private training is not cut here: ``private.fit.fit_private`` owns its noise, sampling and
accounting. Private trials call ``CADASG.fit`` and are scored by ``snapshot_of`` on the networks
and cache its progress callback hands out (``EpochReport.state`` / ``.cache``; see
``tuning.trainable``).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from cadasg_dist.context.cache import ContextCache
from cadasg_dist.errors import ConfigError
from cadasg_dist.model.networks import CADASGNetworks
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.train.fit import final_cache_pass
from cadasg_dist.train.loop import EpochReport, TrainingLoop, as_tensors, new_cache, shuffled_batches, use_threads
from cadasg_dist.train.step import TrainState


def snapshot_of(model: CADASG, nets: CADASGNetworks, cache: ContextCache, epochs: int) -> CADASG:
    """A sampler over networks and cache still in training; ``model`` must be prepared.

    Privacy: with private training, the networks come from DP-SGD and the EMA cache was released
    with noise, so sampling from them is post-processing and spends nothing.
    """
    view = CADASG(model.config)
    view.schema, view.extractor, view.transformer = model.schema, model.extractor, model.transformer
    view.nets, view.cache, view.ledger = nets, cache, model.ledger
    view.constraints = model.constraints  # built at prepare, with the combinations read from the table
    view.meta = {"epochs": epochs}
    return view


class RoundTrainer:
    """Non-private ``CADASG(config).fit(frame)`` cut into rounds: ``train(k)`` epochs at a time, then ``finish()``."""

    def __init__(self, model: CADASG, frame: pd.DataFrame) -> None:
        if model.config.private:
            raise ConfigError("RoundTrainer trains without privacy; private runs go through CADASG.fit")
        self.model = model
        prepared = model.prepare(frame)
        cfg = model.config
        use_threads(cfg)
        self.xs, self.cs = as_tensors(prepared.x, prepared.ids)
        self.state = TrainState.create(prepared.dims, cfg)
        self.cache = new_cache(prepared.dims, cfg)
        self.rng = np.random.default_rng(cfg.train.seed)
        self.loop = TrainingLoop(cfg, self.state, self.cache)

    @property
    def epoch(self) -> int:
        return len(self.state.history)

    @property
    def epochs(self) -> int:
        return self.model.config.train.epochs

    def train(self, epochs: int) -> list[EpochReport]:
        """Run up to ``epochs`` more epochs (fewer when the schedule ends)."""
        size = self.model.config.train.batch_size
        return list(self.loop.epochs(lambda: shuffled_batches(self.xs, self.cs, size, self.rng),
                                     min(epochs, self.epochs - self.epoch), total=self.epochs))

    def snapshot(self) -> CADASG:
        """A sampler of the model as it stands (EMA cache, no final pass)."""
        return snapshot_of(self.model, self.state.nets, self.cache, self.epoch)

    def finish(self) -> CADASG:
        """The final cache pass, then the trained ``CADASG`` (as ``CADASG.fit`` returns it)."""
        cfg = self.model.config
        if cfg.cache.final_pass:
            final_cache_pass(cfg, self.state, self.cache, self.xs, self.cs)
        return self.model.assemble(self.state.nets, self.cache, self.state.history,
                                   ledger=PrivacyLedger.non_private(),
                                   seconds=time.perf_counter() - self.loop.started, rows=len(self.xs))
