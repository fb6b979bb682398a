"""The federated plan round: each silo's side (``PlanParty``) and the secure sum (``SecureSum``).

Privacy caveats first:

* **No row leaves its silo.** A party holds its silo's rows and answers each stage of the plan
  round (``federation.plan_releases``) with ONE vector: the exact statistic over its own rows (its
  count, the magnitude histograms behind the bounds, the per-column histograms behind quantile
  grids, point masses, missingness and category frequencies, the per-class and per-context
  marginals) plus its share of that release's Gaussian noise. Which statistic, over which public
  layout (columns, bounds, transforms), is decided by the server from declarations and earlier
  noisy totals only.
* **Noise shares** (``federated.plan_noise``). "split": each of k silos adds N(0, σ²/k), so the
  total carries exactly the noise of the pooled release, N(0, σ²): the server, which sees only the
  total, learns no more than from a pooled plan. A silo's own vector carries σ/√k only, so its
  protection against the server rests on the secure sum, and against other silos on their not
  pooling their shares with the server. "full": each silo adds N(0, σ²) and is protected on its
  own whatever the others do; the total carries √k·σ. Each party records every release it answers
  in ``spent`` (the same mechanisms in both modes: σ of the release the server sees, its
  sensitivity), which is what its training ledger starts from.
* **The secure sum** (``SecureSum``) is the masking step of SecAgg (Bonawitz et al. 2017): every
  pair of parties agrees on a secret over X25519 (the server relays only public keys), each party
  adds a pairwise mask to its vector in fixed point modulo 2^64 (+ for the peer named after it,
  - for the one before), and the masks cancel in the sum: the server gets each party's vector
  masked by uniform noise and only the total in the clear. Unlike Flower's SecAgg+ (which the
  training rounds use), there is no secret sharing of the masks, hence no dropout recovery: the
  plan round needs every declared silo and stops with an error naming the silo that did not answer.
  Rounding a noisy value to the fixed-point grid (2^-16) is post-processing of the silo's release.
* Randomness (noise, the rows kept per unit, the encoder's tie spreading, the keys) comes from the
  OS's entropy unless a test passes ``rng``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cadasg_dist.config import CADASGConfig
from cadasg_dist.errors import CADASGError
from cadasg_dist.model.histograms import class_counts, context_counts
from cadasg_dist.privacy import entropy
from cadasg_dist.privacy.ledger import Mechanism
from cadasg_dist.private.columns import PrivateColumn, conform_categories
from cadasg_dist.private.prepare import conform
from cadasg_dist.private.releases import bounds_counts, column_counts, count_vector
from cadasg_dist.private.sampling import cap_units

FIXED_POINT = 2.0 ** 16  # the secure sum's grid: noisy counts to 1/65536 of a row
NOISE_MODES = ("split", "full")


def noise_share(mode: str, n_silos: int) -> float:
    """The fraction of a release's noise variance that each silo adds (see the module doc)."""
    if mode not in NOISE_MODES:
        raise CADASGError(f"unknown plan noise mode {mode!r}; expected one of {NOISE_MODES}")
    return 1.0 / n_silos if mode == "split" else 1.0


class PlanParty:
    """One silo's side of the plan round. Its rows never leave it; see the module doc."""

    def __init__(self, name: str, frame: pd.DataFrame, *, rng: np.random.Generator | None = None) -> None:
        self.name = name
        self._frame = frame
        self._rng = entropy.secret_generator() if rng is None else rng
        self._key = X25519PrivateKey.from_private_bytes(self._rng.bytes(32) if rng is not None
                                                        else entropy.secret_seed(256).to_bytes(32, "little"))
        self._peers: dict[str, bytes] = {}
        self._share = 1.0
        self._units: np.ndarray | None = None
        self._x: np.ndarray | None = None
        self._contexts: np.ndarray | None = None
        self.spent: list[Mechanism] = []  # every plan release this silo answered: its ledger's start

    # --- set-up: public metadata and keys -------------------------------------------------------
    def header(self) -> dict[str, str]:
        """Column names and storage dtypes: public metadata, like a codebook's."""
        return {str(c): str(t) for c, t in self._frame.dtypes.items()}

    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def meet(self, keys: dict[str, bytes]) -> None:
        """The other parties' public keys (relayed by the server)."""
        self._peers = {name: key for name, key in keys.items() if name != self.name}

    def start(self, cfg: CADASGConfig, columns: list[PrivateColumn], share: float) -> None:
        """Cap rows per unit and conform categories by value, as ``prepare_private`` does: row by
        row, from public declarations only."""
        frame, self._units = cap_units(self._frame, cfg, self._rng)
        self._frame = conform_categories(frame, columns)
        self._share = share

    def settle(self, columns: list[PrivateColumn], transformer: Any, extractor: Any, encode: bool) -> None:
        """Conform the rows to the released schema; encode them (secret tie spreading) when a
        marginals stage will need them."""
        self._frame = conform(self._frame, columns, transformer)
        if encode:
            self._x = transformer.encode(self._frame, seed=int(self._rng.integers(2**62)))
            self._contexts = extractor.ids(self._frame)

    # --- the stages ----------------------------------------------------------------------------
    def statistic(self, stage: str, public: dict[str, Any]) -> np.ndarray:
        """The exact statistic of ``stage`` over this silo's rows, in the layout ``public`` fixes.
        It never leaves the party without noise (``answer``)."""
        if stage == "count":
            n_units = None if self._units is None else (int(self._units.max()) + 1 if len(self._units) else 0)
            return count_vector(len(self._frame), n_units, public["rows_per_unit"])[0]
        if stage == "bounds":
            return _concat([bounds_counts(self._frame, c) for c in public["columns"]])
        if stage == "histograms":
            return _concat([column_counts(self._frame, c, public["bins"]) for c in public["columns"]])
        x = self._x if self._x is not None else np.zeros((0, public["transformer"].output_dim), dtype=np.float32)
        if stage == "class_marginals":
            counts = class_counts(x, public["transformer"], public["dims"], public["resolution"])
        elif stage == "context_marginals":
            ids = self._contexts if self._contexts is not None else np.zeros(0, dtype=np.int64)
            counts = context_counts(x, public["transformer"], ids, public["n_contexts"], public["pinned"],
                                    public["resolution"])
        else:
            raise CADASGError(f"unknown plan stage {stage!r}")
        return _concat([np.asarray(counts[k], dtype=float).ravel() for k in public["keys"]])

    def answer(self, stage: str, mechanism: Mechanism, public: dict[str, Any]) -> np.ndarray:
        """The stage's statistic plus this silo's noise share (the release's sd is σ times its
        sensitivity), recorded in ``spent``, then masked for the secure sum."""
        exact = self.statistic(stage, public)
        sd = mechanism.noise_multiplier * mechanism.sensitivity * math.sqrt(self._share)
        noisy = exact + self._rng.normal(0.0, sd, exact.shape)
        self.spent.append(mechanism)
        return self._mask(stage, _encode(noisy))

    def _mask(self, stage: str, values: np.ndarray) -> np.ndarray:
        out = values.copy()
        mine = self._key
        for name, key in sorted(self._peers.items()):
            secret = mine.exchange(X25519PublicKey.from_public_bytes(key))
            pair = sorted([self.name, name])
            seed = hashlib.sha256(secret + "\0".join([stage, *pair]).encode()).digest()
            mask = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "little"))).bit_generator.random_raw(
                len(values)).astype(np.uint64)
            out = out + mask if self.name < name else out - mask  # wraps modulo 2^64
        return out


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=float).ravel() for p in parts]) if parts else np.zeros(0)


def _encode(values: np.ndarray) -> np.ndarray:
    return np.round(values * FIXED_POINT).astype(np.int64).view(np.uint64)


class SecureSum:
    """The server's side: relays public keys, then sums the parties' masked vectors modulo 2^64.
    It sees each vector only masked, and the total (the noisy release) in the clear."""

    def __init__(self, parties: list[PlanParty]) -> None:
        names = [p.name for p in parties]
        if len(set(names)) != len(names):
            raise CADASGError(f"two silos of the plan round share a name: {names}")
        self.parties = parties
        keys = {p.name: p.public_key() for p in parties}
        for p in parties:
            p.meet(keys)

    def total(self, stage: str, mechanism: Mechanism, public: dict[str, Any]) -> np.ndarray:
        """The sum of every party's noisy statistic: one Gaussian release with the stage's noise."""
        total: np.ndarray | None = None
        for p in self.parties:
            try:
                masked = p.answer(stage, mechanism, public)
            except Exception as err:  # a silo that cannot answer stops the round: its masks would not cancel
                # the library's own messages name columns and settings, never values; others only their type
                why = str(err) if isinstance(err, CADASGError) else type(err).__name__
                raise CADASGError(f"silo {p.name!r} did not answer the plan round's {stage!r} stage ({why}); "
                                  "the plan round needs every declared silo") from None
            if total is not None and len(masked) != len(total):
                raise CADASGError(f"silo {p.name!r} answered the {stage!r} stage with {len(masked)} values, "
                                  f"expected {len(total)}")
            total = masked if total is None else total + masked
        assert total is not None
        return total.view(np.int64).astype(float) / FIXED_POINT
