"""RoundTrainer (training in rounds for Tune trials) must give the very model CADASG.fit gives."""

from __future__ import annotations

import pytest
import torch

from cadasg_dist.errors import ConfigError
from cadasg_dist.synthesizer import CADASG
from cadasg_dist.tuning.rounds import RoundTrainer


def assert_same_model(a: CADASG, b: CADASG) -> None:
    for (name, x), (_, y) in zip(a.nets.state_dict().items(), b.nets.state_dict().items()):
        assert torch.equal(x, y), name
    for name, x in a.cache.state_dict().items():
        assert torch.equal(x, b.cache.state_dict()[name]), name
    assert a.history == b.history
    assert a.ledger.state_dict() == b.ledger.state_dict()


def run_in_rounds(config, frame, rounds: list[int]) -> CADASG:
    trainer = RoundTrainer(CADASG(config), frame)
    for epochs in rounds:
        trainer.train(epochs)
        trainer.snapshot().sample(50, seed=1)  # scoring between rounds must not disturb training
    return trainer.finish()


def test_rounds_equal_fit_without_privacy(mixed_table, tiny_config):
    # Prepare
    expected = CADASG(tiny_config).fit(mixed_table)

    # Execute
    got = run_in_rounds(tiny_config, mixed_table, [1, 1])

    # Assert
    assert_same_model(got, expected)
    assert not got.ledger.private


def test_train_stops_at_the_schedule(mixed_table, tiny_config):
    trainer = RoundTrainer(CADASG(tiny_config), mixed_table)

    reports = trainer.train(5)

    assert [r.epoch for r in reports] == [1, 2]
    assert trainer.train(1) == []


def test_private_runs_are_refused(mixed_table, tiny_config):
    with pytest.raises(ConfigError, match="CADASG.fit"):
        RoundTrainer(CADASG(tiny_config.replace(**{"privacy.epsilon": 3.0})), mixed_table)
