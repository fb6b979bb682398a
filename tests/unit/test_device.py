"""Training on a device other than the CPU: random draws and the cache stay on the CPU, so a seed
gives the same run anywhere. The GPU tests run only where torch sees a GPU (not in CI)."""

from __future__ import annotations

import pytest
import torch

from cadasg_dist.synthesizer import CADASG
from cadasg_dist.train.step import Batch, resolve_device, to_device

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_auto_is_the_cpu_without_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_to_device_moves_every_tensor_of_a_batch() -> None:
    batch = Batch(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    to_device(batch, torch.device("cpu"))
    assert batch.x.device.type == "cpu" and batch.cell is None


def test_explicit_cpu_device_is_the_default_run(mixed_table, tiny_config) -> None:
    a = CADASG(tiny_config).fit(mixed_table).sample(50, seed=1)
    b = CADASG(tiny_config.replace(**{"train.device": "cpu"})).fit(mixed_table).sample(50, seed=1)
    assert a.equals(b)


@GPU
@pytest.mark.parametrize("epsilon", [float("inf"), 4.0])
def test_gpu_fit_samples_on_the_cpu(mixed_table, tiny_config, epsilon) -> None:
    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}
    cfg = tiny_config.replace(**{"train.device": "cuda", "privacy.epsilon": epsilon,
                                 **({"data.columns": declared} if epsilon != float("inf") else {})})
    model = CADASG(cfg).fit(mixed_table)
    assert next(model.nets.parameters()).device.type == "cpu"
    assert len(model.sample(100, seed=0)) == 100
