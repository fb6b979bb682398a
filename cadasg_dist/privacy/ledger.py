"""The privacy ledger: every private release of a run, composed into one (ε, δ).

Privacy caveats first:

* ε is only as honest as the ledger is complete. Every read of the private table that shapes an
  output (DP-SGD steps of each network, noisy cache releases, private preprocessing statistics such
  as quantiles) must be ``record``-ed; anything fitted on raw rows outside the ledger voids the
  guarantee.
* Each entry is a Poisson-subsampled Gaussian mechanism: rows sampled independently with
  probability ``sample_rate``, each row's contribution clipped to L2 norm ``sensitivity``, Gaussian
  noise of standard deviation ``noise_multiplier * sensitivity``. ``sensitivity`` is documentation;
  the accounting only uses the ratio ``noise_multiplier``.
* The unit of privacy is whatever one "row" is when clipping (a row by default; a user/patient when
  contributions are grouped before clipping).
* A resumed run must ``load_state_dict`` the saved ledger, or it under-reports ε.

The math lives in :mod:`cadasg_dist.privacy.analysis` (pure); this class only keeps the history,
as Opacus's ``RDPAccountant`` does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from cadasg_dist.errors import ArtifactError, ConfigError
from cadasg_dist.privacy import _checks
from cadasg_dist.privacy.analysis import (
    ACCOUNTANTS,
    DEFAULT_RDP_ORDERS,
    LEDGER_FORMAT,
    LEDGER_VERSION,
    MECHANISM_KINDS,
    check_ledger_state,
    compose_rdp,
    epsilon_from_history,
    rdp_to_epsilon,
)


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """One ledger entry: ``steps`` compositions of a subsampled Gaussian mechanism.

    ``name`` says what was released ("dpsgd/critic", "cache/latent", "preprocess/quantiles").
    ``sensitivity`` is the L2 sensitivity the noise was scaled to (documentation only: the noise
    standard deviation is ``noise_multiplier * sensitivity`` and ε depends on the ratio alone).
    """

    name: str
    kind: str = "subsampled_gaussian"
    noise_multiplier: float
    sample_rate: float
    steps: int = 1
    sensitivity: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a mechanism needs a non-empty string name, got {self.name!r}.")
        if self.kind not in MECHANISM_KINDS:
            raise ConfigError(f"mechanism {self.name!r} has unknown kind {self.kind!r}; supported: {MECHANISM_KINDS}.")
        # allow_zero: a non-private ledger may document noiseless steps; a private one refuses them.
        object.__setattr__(self, "noise_multiplier", _checks.check_noise_multiplier(
            self.noise_multiplier, name=f"{self.name} noise_multiplier", allow_zero=True))
        object.__setattr__(self, "sample_rate", _checks.check_sample_rate(
            self.sample_rate, name=f"{self.name} sample_rate"))
        object.__setattr__(self, "steps", _checks.check_steps(self.steps, name=f"{self.name} steps"))
        object.__setattr__(self, "sensitivity", _checks.check_positive(
            self.sensitivity, name=f"{self.name} sensitivity"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (all fields)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mechanism:
        """Inverse of :meth:`to_dict`; raises ``ConfigError`` on unknown or missing fields."""
        known = {"name", "kind", "noise_multiplier", "sample_rate", "steps", "sensitivity"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown mechanism fields {sorted(unknown)}; expected {sorted(known)}.")
        missing = {"name", "noise_multiplier", "sample_rate"} - set(data)
        if missing:
            raise ConfigError(f"mechanism dict {dict(data)!r} lacks {sorted(missing)}.")
        return cls(**data)

    def history_entry(self) -> tuple[float, float, int]:
        """``(noise_multiplier, sample_rate, steps)``, the triple the accountant composes."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


class PrivacyLedger:
    """Stateful list of mechanisms; ε of their composition at the ledger's δ.

    Build ``PrivacyLedger(delta=1e-5)`` for a private run (δ well below 1/n_rows) or
    ``PrivacyLedger.non_private()`` for an explicit non-private run, whose ε is ``inf``.
    """

    def __init__(self, *, delta: float, accountant: str = "rdp") -> None:
        if accountant not in ACCOUNTANTS:
            raise ConfigError(f"unknown accountant {accountant!r}; use one of {ACCOUNTANTS}.")
        self._delta: float | None = _checks.check_delta(delta)
        self._accountant = accountant
        self._private = True
        self._orders: tuple[float, ...] = DEFAULT_RDP_ORDERS
        self._mechanisms: list[Mechanism] = []

    @classmethod
    def non_private(cls) -> PrivacyLedger:
        """A ledger for a run without formal privacy: ``epsilon()`` is ``inf``, ``summary()["private"]`` False.

        It still records what it is given (σ = 0 allowed), so the run's history stays inspectable.
        """
        ledger = cls(delta=0.5)
        ledger._delta = None
        ledger._accountant = "none"
        ledger._private = False
        return ledger

    # -- reading -----------------------------------------------------------------------------

    @property
    def private(self) -> bool:
        return self._private

    @property
    def delta(self) -> float | None:
        return self._delta

    @property
    def accountant(self) -> str:
        return self._accountant

    @property
    def mechanisms(self) -> tuple[Mechanism, ...]:
        """The recorded entries, oldest first (consecutive identical entries merged)."""
        return tuple(self._mechanisms)

    def __len__(self) -> int:
        return len(self._mechanisms)

    def __repr__(self) -> str:
        if not self._private:
            return f"PrivacyLedger.non_private(<{len(self)} mechanisms>)"
        return f"PrivacyLedger(delta={self._delta}, accountant={self._accountant!r}, <{len(self)} mechanisms>)"

    # -- recording ---------------------------------------------------------------------------

    def record(
        self, *, name: str, noise_multiplier: float, sample_rate: float, steps: int = 1, sensitivity: float = 1.0
    ) -> Mechanism:
        """Append ``steps`` uses of a subsampled Gaussian mechanism; return the (merged) entry.

        Privacy: record *after* the release is computed but *before* anything is published, and
        record every release, including ones that end up unused. An entry identical to the last
        one in name, σ, q and sensitivity is merged into it by adding steps (as Opacus does), so a
        long run stays a short ledger.
        """
        mech = Mechanism(name=name, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                         steps=steps, sensitivity=sensitivity)
        if self._private and mech.noise_multiplier == 0:
            raise ConfigError(
                f"mechanism {name!r} has noise_multiplier 0 in a private ledger, which would make "
                f"epsilon infinite; add noise or use PrivacyLedger.non_private()."
            )
        if self._mechanisms and _same_mechanism(self._mechanisms[-1], mech):
            mech = replace(self._mechanisms[-1], steps=self._mechanisms[-1].steps + mech.steps)
            self._mechanisms[-1] = mech
        else:
            self._mechanisms.append(mech)
        return mech

    # -- accounting --------------------------------------------------------------------------

    def epsilon(self, delta: float | None = None) -> float:
        """ε of all recorded mechanisms composed, at ``delta`` (default: the ledger's δ).

        ``inf`` for a non-private ledger; 0.0 while nothing is recorded.
        """
        return self._epsilon_of([m.history_entry() for m in self._mechanisms], delta)

    def epsilon_if(self, *, name: str, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """ε the ledger would report after recording this mechanism, without recording it.

        Use it to stop *before* a step would exceed the budget:
        ``if ledger.epsilon_if(...) > target: stop`` then record only the steps actually taken.
        With the RDP accountant this costs ~0.1 ms once the (σ, q) curve is cached; with PRV it
        costs about a second, so check per epoch there (or stop on RDP, which is an upper bound too).
        """
        mech = Mechanism(name=name, noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        if self._private and mech.noise_multiplier == 0:
            return math.inf
        history = [m.history_entry() for m in self._mechanisms] + [mech.history_entry()]
        return self._epsilon_of(history, None)

    def _epsilon_of(self, history: list[tuple[float, float, int]], delta: float | None) -> float:
        if not self._private:
            return math.inf
        delta = self._delta if delta is None else _checks.check_delta(delta)
        return epsilon_from_history(history, delta=delta, accountant=self._accountant, orders=self._orders)

    def summary(self) -> dict[str, Any]:
        """Printable report: ε, δ, private flag, accountant, and each mechanism with its ε alone.

        ``epsilon_by_name`` composes all entries sharing a name (e.g. every "dpsgd/critic" phase).
        Per-mechanism ε values do not add up to the total: composition is sub-additive under RDP.
        """
        report: dict[str, Any] = {
            "private": self._private,
            "accountant": self._accountant,
            "delta": self._delta,
            "epsilon": self.epsilon(),
            "total_steps": sum(m.steps for m in self._mechanisms),
            "mechanisms": [],
            "epsilon_by_name": {},
        }
        for mech in self._mechanisms:
            entry = mech.to_dict()
            entry["epsilon_alone"] = self._epsilon_of([mech.history_entry()], None)
            report["mechanisms"].append(entry)
        for name in dict.fromkeys(m.name for m in self._mechanisms):
            history = [m.history_entry() for m in self._mechanisms if m.name == name]
            report["epsilon_by_name"][name] = self._epsilon_of(history, None)
        if self._private and self._accountant == "rdp" and self._mechanisms:
            rdp = compose_rdp([m.history_entry() for m in self._mechanisms], orders=self._orders)
            _, order = rdp_to_epsilon(rdp=rdp, orders=self._orders, delta=self._delta)
            report["rdp_order"] = order  # the first or last order means a wider range could be tighter
        return report

    # -- persistence -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: format, version, accountant, private flag, δ, RDP orders, mechanisms."""
        return {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "accountant": self._accountant,
            "private": self._private,
            "delta": self._delta,
            "rdp_orders": list(self._orders),
            "mechanisms": [m.to_dict() for m in self._mechanisms],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace this ledger's history with a saved one.

        Raises ``ArtifactError`` if the format or version is not this one's, or if the saved
        accountant, private flag or δ differ from this ledger's (resuming a run under a different
        accounting would silently change what ε means).
        """
        check_ledger_state(state)
        for key, mine in (("private", self._private), ("accountant", self._accountant), ("delta", self._delta)):
            if state.get(key) != mine:
                raise ArtifactError(
                    f"saved privacy ledger has {key}={state.get(key)!r} but this ledger has {key}={mine!r}; "
                    f"build the ledger with the saved settings (PrivacyLedger.from_json) to resume."
                )
        try:
            mechanisms = [Mechanism.from_dict(m) for m in state["mechanisms"]]
        except (ConfigError, TypeError) as err:
            raise ArtifactError(f"saved privacy ledger has a bad mechanism: {err}") from err
        if self._private:
            self._orders = tuple(float(a) for a in state["rdp_orders"])
        self._mechanisms = mechanisms

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PrivacyLedger:
        """A new ledger with the saved settings and history."""
        check_ledger_state(state)
        ledger = cls(delta=state["delta"], accountant=state["accountant"]) if state["private"] else cls.non_private()
        ledger.load_state_dict(state)
        return ledger

    def to_json(self) -> str:
        """The state dict as JSON text (the artifact to save next to the model)."""
        return json.dumps(self.state_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        """Inverse of :meth:`to_json`."""
        try:
            state = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArtifactError(f"privacy ledger is not valid JSON: {err}") from err
        return cls.from_state_dict(state)


def _same_mechanism(a: Mechanism, b: Mechanism) -> bool:
    return (a.name, a.kind, a.noise_multiplier, a.sample_rate, a.sensitivity) == (
        b.name, b.kind, b.noise_multiplier, b.sample_rate, b.sensitivity)
