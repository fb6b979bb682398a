"""A private federated run's accounting: each silo's noisy size, and the run's guarantee.

Privacy caveats first:

* **A silo's size never leaves it exactly.** Before training, a private silo releases its row
  count (and, with a privacy unit, its unit count) as ONE Gaussian mechanism recorded in its own
  ledger (``silo/count``), through the one count release of ``private.releases.release_count``:
  sensitivity 1 for a row count, or sqrt(2) for the pair (units, rows / k) when one unit holds at
  most k = ``privacy.max_rows_per_unit`` rows. The silo plans
  its run with that noisy count n-hat: the sampling rate q = B / n-hat in every ``train_step``
  entry of its ledger, its steps per epoch and the divisor of its noisy gradient (q * n-hat units)
  are post-processing of the release, and n-hat is its FedAvg / SecAgg+ weight. Poisson sampling
  at any rate q fixed without reading the rows is what the accountant assumes, so the accounting
  stays exact whatever n-hat is.
* The count's noise multiplier is fixed before any row is read (``count_sigma``): the smallest
  with which the count spends ``federated.count_share`` of the Renyi budget at some order.
* **The run's guarantee** (``run_guarantee``). A person with rows in several silos is read by
  every silo's releases, so unless the silos are declared disjoint in units
  (``federated.disjoint_units``) the run's ledger holds the shared preprocessing releases once and
  every silo's own releases (count, steps, cache), which the accountant composes (RDP curves add).
  Declared disjoint, each person is read by one silo (and the shared plan): the guarantee is the
  largest silo's ledger (parallel composition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cadasg_dist.config import CADASGConfig
from cadasg_dist.errors import CADASGError, ConfigError
from cadasg_dist.privacy.analysis import DEFAULT_RDP_ORDERS
from cadasg_dist.privacy.ledger import Mechanism, PrivacyLedger
from cadasg_dist.private.budget import rdp_budget
from cadasg_dist.private.releases import release_count as _release

COUNT = "silo/count"
SPANNING = "units may span silos"
DISJOINT = "units declared disjoint across silos"


@dataclass(frozen=True)
class NoisyCount:
    """A silo's released size: rows and units (equal without a privacy unit), at least 1 each."""

    rows: int
    units: int

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "units": self.units}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NoisyCount:
        return cls(rows=int(raw["rows"]), units=int(raw["units"]))


def count_sigma(cfg: CADASGConfig, share: float) -> float:
    """The count's noise multiplier: the smallest sigma whose Renyi divergence alpha / (2 sigma^2) is
    ``share`` of the budget R(alpha) (``private.budget.rdp_budget``) at some order alpha. Reads no data."""
    p = cfg.privacy
    if p.delta is None:
        raise ConfigError("a federation plan fixes privacy.delta for every silo; this one has none")
    ratios = [a / r for a in DEFAULT_RDP_ORDERS if (r := rdp_budget(p.epsilon, p.delta, a)) > 0]
    if not ratios:
        raise ConfigError(f"epsilon={p.epsilon} at delta={p.delta:.3g} is below what the accountant can certify; "
                          "raise epsilon or delta")
    return math.sqrt(min(ratios) / (2.0 * share))


def release_count(n_rows: int, n_units: int | None, rows_per_unit: int, sigma: float,
                  rng: np.random.Generator) -> tuple[NoisyCount, Mechanism]:
    """The silo's noisy size (``n_units`` None: one row per unit) and the mechanism to record:
    the one count release of ``private.releases.release_count`` (its sensitivity rule and its
    post-processing: rounding, at least 1, rows at least units), which keeps q = B / n-hat defined
    for a silo that holds no rows; such a silo then trains and replies like any other
    (docs/guides/federated.md)."""
    rows, units, sensitivity = _release(n_rows, n_units, sigma=sigma, rows_per_unit=rows_per_unit, rng=rng)
    return NoisyCount(rows=rows, units=units), Mechanism(name=COUNT, noise_multiplier=sigma, sample_rate=1.0, steps=1,
                                                         sensitivity=sensitivity)


def run_guarantee(ledgers: dict[str, PrivacyLedger], shared: tuple[Mechanism, ...], disjoint: bool
                  ) -> tuple[PrivacyLedger, dict[str, Any]]:
    """(the run's ledger, its summary for the artifact) from every silo's latest ledger.

    ``shared``: the plan's preprocessing releases, at the head of every silo's ledger and read once.
    Spanning units: one ledger with ``shared`` once, then each silo's own mechanisms named
    ``SILO:NAME``. Disjoint: the silo ledger with the largest epsilon."""
    if not ledgers:
        raise CADASGError("no silo ledger came back: the model's guarantee is unknown")
    names = sorted(ledgers)
    first = ledgers[names[0]]
    for name in names:
        head = ledgers[name].mechanisms[:len(shared)]
        if tuple(m.to_dict() for m in head) != tuple(m.to_dict() for m in shared):
            raise CADASGError(f"silo {name!r}'s ledger does not start with the plan's preprocessing releases")
        if (ledgers[name].delta, ledgers[name].accountant) != (first.delta, first.accountant):
            raise CADASGError(f"silo {name!r}'s ledger has another delta or accountant than silo {names[0]!r}'s")
    if disjoint:
        ledger = max((ledgers[n] for n in names), key=lambda lg: lg.epsilon())
    else:
        ledger = PrivacyLedger(delta=first.delta, accountant=first.accountant)
        own = [(f"{name}:{m.name}", m) for name in names for m in ledgers[name].mechanisms[len(shared):]]
        for label, m in [(m.name, m) for m in shared] + own:
            ledger.record(name=label, noise_multiplier=m.noise_multiplier, sample_rate=m.sample_rate, steps=m.steps,
                          sensitivity=m.sensitivity)
    summary = {"assumption": DISJOINT if disjoint else SPANNING, "epsilon": ledger.epsilon(), "delta": ledger.delta,
               "silo_epsilons": {name: ledgers[name].epsilon() for name in names}}
    return ledger, summary


def guarantee_lines(meta: dict[str, Any], ledger: Any) -> list[str]:
    """What a federated model's ledger means: every silo composed (a person may have rows in several
    silos) or the largest silo's (silos declared disjoint in units). ``cadasg privacy`` prints it too."""
    if not ledger.private:
        return ["NOT PRIVATE (epsilon = inf)"]
    g = meta.get("guarantee")
    if g is None:  # written before the composed guarantee: the largest silo's ledger
        return [f"guarantee: the largest silo's ledger (ε={ledger.epsilon():.3f}, δ={ledger.delta:.2e}), "
                "valid only if no person has rows in two silos"]
    if g["assumption"] == SPANNING:
        return [f"guarantee for a person whose rows may span silos: every silo's releases composed "
                f"(ε={g['epsilon']:.3f}, δ={g['delta']:.2e}). If no person has rows in two silos, declare "
                "federated.disjoint_units: true and the largest silo's ε holds"]
    return [f"guarantee: silos declared disjoint in units (federated.disjoint_units), so the largest silo's "
            f"(ε={g['epsilon']:.3f}, δ={g['delta']:.2e}) holds for everyone"]
