"""Shared fixtures: small tables, a tiny trained model, and ONE Ray instance per test session.

Ray costs seconds to start on 2 cores, so every integration test that needs it takes the
session-scoped ``ray_session`` fixture instead of calling ``ray.init`` itself.
"""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_table(name: str) -> pd.DataFrame:
    """A table from ../shared/datasets, or a skip when this checkout has no shared folder."""
    path = Path(os.environ.get("CADASG_DATASETS", SHARED)) / f"{name}.csv"
    if not path.is_file():
        pytest.skip(f"shared dataset {path} not available in this checkout")
    return pd.read_csv(path)


@pytest.fixture(scope="module", autouse=True)
def seeded_secret_entropy(request):
    """Private fits draw their noise from OS entropy (cadasg_dist.privacy.entropy); under test the
    stream is seeded by the module's name, so a private fit gives the same result on every run
    instead of failing once in a while on an unlucky draw. Ray workers, in other processes, still
    draw real entropy: tests through them must hold whatever the noise."""
    from cadasg_dist.privacy import entropy

    stream = random.Random(zlib.crc32(request.module.__name__.encode()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(entropy, "secret_seed", lambda bits=63: stream.getrandbits(bits))
        yield


@pytest.fixture(scope="session")
def rwm5yr() -> pd.DataFrame:
    """The bundled demo table (ships with the package; no ../shared needed)."""
    from cadasg_dist.datasets import load_rwm5yr

    return load_rwm5yr()


@pytest.fixture(scope="session")
def mixed_table() -> pd.DataFrame:
    """600 rows of every column kind, with missing values and a rare context."""
    rng = np.random.default_rng(0)
    n = 600
    group = rng.choice(["a", "b", "rare"], size=n, p=[0.55, 0.40, 0.05])
    x = rng.normal(size=n)
    df = pd.DataFrame({
        "group": group,
        "flag": rng.random(n) < 0.3,
        "count": rng.poisson(9.0, size=n) * (rng.random(n) < 0.6),
        "amount": np.exp(x) * 100.0,
        "score": x * 2.0 + rng.normal(scale=0.5, size=n),
        "level": rng.choice([1, 2, 3], size=n),
        "when": pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 700, size=n), unit="D"),
        "label": np.where(x + rng.normal(scale=0.5, size=n) > 0.5, "yes", "no"),
    })
    df.loc[rng.random(n) < 0.1, "amount"] = np.nan
    df.loc[rng.random(n) < 0.05, "level"] = np.nan
    return df


@pytest.fixture(scope="session")
def tiny_config():
    """A config that trains in about a second: for tests of plumbing, not of quality."""
    from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig

    return CADASGConfig(
        target="label",
        context=ContextConfig(columns=("group",)),
        model=ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,)),
        train=TrainConfig(epochs=2, batch_size=128, seed=0),
    )


@pytest.fixture(scope="session")
def tiny_model(mixed_table, tiny_config):
    from cadasg_dist.synthesizer import CADASG

    return CADASG(tiny_config).fit(mixed_table)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (2 CPUs, no dashboard)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # address="local": start this session's own Ray, never join one that `ray start` (or another
        # test session) left on the machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()
