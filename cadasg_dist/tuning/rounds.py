"""Training in rounds of epochs, so a Tune trial can score the model between rounds.

``RoundTrainer`` runs the epochs of ``train.fit.fit_local`` (the non-private ``CADASG.fit``) but
stops after any number of them, hands out a sampler of the model as it stands (``snapshot``) and
finishes with the same final cache pass. It calls the one ``train_step`` and ``fit.batches``;
tests/unit/test_tune_rounds.py checks that rounds of epochs give the very model ``CADASG.fit``
gives, so the two loops cannot drift apart unnoticed.

Private training is not cut here: ``privacy.training.fit_private`` owns its noise, sampling and
accounting, and a copy of that loop would be a second place to get privacy wrong. Private trials
call ``CADASG.fit`` and are scored by ``snapshot_of`` on the networks and cache its progress
callback hands out (``EpochReport.state`` / ``.cache``; see ``tuning.trainable``).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from cadasg_dist.context.cache import ContextCache
from cadasg_dist.errors import ConfigError
from cadasg_dist.model.networks import CADASGNetworks
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.train.fit import EpochReport, batches, final_cache_pass
from cadasg_dist.train.step import Batch, TrainState, train_step


def snapshot_of(model: CADASG, nets: CADASGNetworks, cache: ContextCache, epochs: int) -> CADASG:
    """A sampler over networks and cache still in training; ``model`` must be prepared.

    Privacy: with private training, the networks come from DP-SGD and the EMA cache was released
    with noise, so sampling from them is post-processing and spends nothing.
    """
    view = CADASG(model.config)
    view.schema, view.extractor, view.transformer = model.schema, model.extractor, model.transformer
    view.nets, view.cache, view.ledger = nets, cache, model.ledger
    view.meta = {"epochs": epochs}
    return view


class RoundTrainer:
    """Non-private ``CADASG(config).fit(frame)`` cut into rounds: ``train(k)`` epochs at a time, then ``finish()``."""

    def __init__(self, model: CADASG, frame: pd.DataFrame) -> None:
        if model.config.private:
            raise ConfigError("RoundTrainer trains without privacy; private runs go through CADASG.fit")
        self.model = model
        x, ids, dims = model.prepare(frame)
        cfg = model.config
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.epoch = 0
        self.started = time.perf_counter()
        self.xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # (N, D)
        self.cs = torch.from_numpy(ids.astype(np.int64))  # (N,)
        self.state = TrainState.create(dims, cfg)
        self.cache = ContextCache(dims.contexts, dims.features, cfg.model.latent_dim, cfg.cache, dims.strata)
        self.rng = np.random.default_rng(cfg.train.seed)

    @property
    def epochs(self) -> int:
        return self.model.config.train.epochs

    def train(self, epochs: int) -> list[EpochReport]:
        """Run up to ``epochs`` more epochs (fewer when the schedule ends)."""
        reports = []
        cfg = self.model.config
        for _ in range(min(epochs, self.epochs - self.epoch)):
            # The epoch body of train.fit.fit_local.
            sums: dict[str, float] = {}
            parts = batches(len(self.xs), cfg.train.batch_size, self.rng)
            for idx in parts:
                metrics = train_step(cfg, self.state, Batch(self.xs[idx], self.cs[idx]), self.cache)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
            means = {k: v / len(parts) for k, v in sums.items()}
            self.epoch += 1
            self.state.history.append({"epoch": self.epoch, **means})
            reports.append(EpochReport(self.epoch, self.epochs, time.perf_counter() - self.started, means,
                                       state=self.state, cache=self.cache))
        return reports

    def snapshot(self) -> CADASG:
        """A sampler of the model as it stands (EMA cache, no final pass)."""
        return snapshot_of(self.model, self.state.nets, self.cache, self.epoch)

    def finish(self) -> CADASG:
        """The final cache pass, then the trained ``CADASG`` (as ``CADASG.fit`` returns it)."""
        cfg = self.model.config
        if cfg.cache.final_pass:
            final_cache_pass(cfg, self.state, self.cache, self.xs, self.cs)
        model = self.model
        model.ledger = PrivacyLedger.non_private()
        model._finish(self.state.nets, self.cache, self.state.history, time.perf_counter() - self.started,
                      len(self.xs))
        return model
