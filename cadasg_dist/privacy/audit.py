"""Audits that try to break the privacy claim: a one-run canary audit and a shadow-model attack.

Privacy caveats first: these read real rows, training rows and the model's output one by one;
their results describe individuals and are for the data owner, never for release. They bound
nothing: an audit's ε is a *lower* bound that a stronger attack may raise, and a low attack AUC is
no proof. Only the ledger's (ε, δ) is a guarantee; an audit that beats it proves a bug.

One-run canary audit (Steinke, Nasr and Jagielski, "Privacy auditing with one (1) training run",
NeurIPS 2023): ``m`` canary rows are each put in the training table with probability 1/2, the
model is trained once, and an attacker who sees only the synthetic output scores every canary.
It guesses "member" for its ``k_plus`` highest scores and "non-member" for its ``k_minus`` lowest,
abstaining on the rest. If training is (ε, δ)-DP, the number of right guesses W out of r is
stochastically dominated by Binomial(r, e^ε/(1+e^ε)) up to a δ term (their Theorem 5.2):

    P[W ≥ v] ≤ f(v) + 2mδ · max_{1≤i≤v} (f(v−i) − f(v)) / i,   f(v) = P[Binomial(r, e^ε/(1+e^ε)) ≥ v].

:func:`epsilon_lower_bound` returns the largest ε this rejects at confidence 1−β: the smallest
privacy loss consistent with the observed guesses. Trying several (k_plus, k_minus) splits the
confidence between them (Bonferroni), so picking the best one afterwards stays valid.

Shadow-model attack (after Stadler, Oprisanu and Troncoso, "Synthetic data: anonymisation
groundhog day", USENIX Security 2022): the attacker trains the same generator on datasets drawn
from a population sample it holds, with known members, learns what a member's neighbourhood in
the synthetic output looks like (:func:`neighbourhood_features`), and applies that classifier to
the released synthetic table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from cadasg_dist.errors import ConfigError


# --- the one-run audit ------------------------------------------------------------------------------
def audit_p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """P[at least ``v`` of ``r`` guesses right] under (ε, δ)-DP with ``m`` canaries (Theorem 5.2)."""
    if not 0 <= v <= r <= m:
        raise ConfigError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ConfigError(f"need epsilon >= 0 and delta in [0, 1], got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon)) if epsilon < 700 else 1.0
    tail = float(stats.binom.sf(v - 1, r, q))  # f(v) = P[Bin(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    # f(v - i) - f(v) = P[v - i <= Bin < v]: cumulative pmf below v, divided by i
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # pmf(v-1), pmf(v-2), ..., pmf(0)
    slope = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * slope, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float = 0.0, beta: float = 0.05,
                        tol: float = 1e-4) -> float:
    """Largest ε that ``v`` right guesses of ``r`` (``m`` canaries) reject at confidence 1 − β; 0 if none."""
    if not 0 < beta < 1:
        raise ConfigError(f"beta must be in (0, 1), got {beta}")
    if audit_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while audit_p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            return math.inf
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if audit_p_value(m, r, v, mid, delta) < beta else (lo, mid)
    return lo


@dataclass(frozen=True)
class AuditResult:
    """The best (k_plus, k_minus) guess and the ε lower bound it gives, Bonferroni-corrected."""

    epsilon_lower: float
    canaries: int
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    beta: float
    tried: int

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def one_run_audit(scores: np.ndarray, included: np.ndarray, *, delta: float, beta: float = 0.05,
                  guesses: Sequence[tuple[int, int]] | None = None) -> AuditResult:
    """ε lower bound from canary ``scores`` (higher = more member-like) and the coin flips ``included``.

    ``guesses``: the (k_plus, k_minus) pairs to try, fixed before looking (default: 5%, 10% and 20%
    of the canaries on each side, and only the top 5% or 10% as members); each is tested at β / len.
    """
    scores, included = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    m = len(scores)
    if m == 0 or included.shape != scores.shape:
        raise ConfigError(f"need one score per canary and one inclusion flag each, got {scores.shape}, "
                          f"{included.shape}")
    if guesses is None:
        guesses = [(max(1, int(f * m)), max(1, int(f * m))) for f in (0.05, 0.1, 0.2)]
        guesses += [(max(1, int(f * m)), 0) for f in (0.05, 0.1)]
    order = np.argsort(-scores, kind="stable")  # most member-like first
    best: AuditResult | None = None
    for k_plus, k_minus in guesses:
        if k_plus + k_minus > m:
            raise ConfigError(f"k_plus + k_minus = {k_plus + k_minus} is above the {m} canaries")
        top, bottom = order[:k_plus], order[m - k_minus:] if k_minus else order[:0]
        v = int(included[top].sum() + (~included[bottom]).sum())
        r = k_plus + k_minus
        eps = epsilon_lower_bound(m, r, v, delta=delta, beta=beta / len(guesses))
        if best is None or eps > best.epsilon_lower:
            best = AuditResult(eps, m, r, v, k_plus, k_minus, beta, len(guesses))
    assert best is not None
    return best


def make_canaries(pool: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` canary row indices into ``pool`` rows chosen as the least typical: the largest mean
    distance to their 10 nearest neighbours in the encoded space (distinctive rows are the ones a
    generator would have to copy to reveal, so the audit has the most power on them)."""
    if not 0 < m <= len(pool):
        raise ConfigError(f"need 0 < m <= {len(pool)} canaries, got {m}")
    k = min(11, len(pool))
    dist, _ = NearestNeighbors(n_neighbors=k).fit(pool).kneighbors(pool)
    typicality = dist[:, 1:].mean(axis=1)
    candidates = np.argsort(-typicality)[: min(len(pool), 4 * m)]  # drawn from the 4m most distinctive
    return rng.choice(candidates, size=m, replace=False)


def nearest_distance(reference: np.ndarray, queries: np.ndarray, k: int = 1) -> np.ndarray:
    """(Q, k) distances from each query to its ``k`` nearest reference rows."""
    dist, _ = NearestNeighbors(n_neighbors=min(k, len(reference))).fit(reference).kneighbors(queries)
    return dist


# --- the shadow-model attack ------------------------------------------------------------------------
def neighbourhood_features(synthetic: np.ndarray, candidates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per candidate: its distances to the 1st, 2nd and 5th nearest synthetic row, the same
    distances to the attacker's ``reference`` rows (how crowded its region is anyway; no candidate
    may be among them), and the ratio of the two at the 1st neighbour (a member pulls the
    synthetic rows towards itself)."""
    k = min(5, len(synthetic), len(reference))
    ds, dr = nearest_distance(synthetic, candidates, k), nearest_distance(reference, candidates, k)
    pick = [0, min(1, k - 1), k - 1]
    return np.column_stack([ds[:, pick], dr[:, pick], ds[:, 0] / (dr[:, 0] + 1e-9)])


@dataclass(frozen=True)
class ShadowAttack:
    """Result of :func:`shadow_attack`: the AUC on the target and on held-out shadow data."""

    auc: float
    shadow_auc: float
    shadows: int
    members: int


def shadow_attack(fit_sample: Callable[[np.ndarray, int], np.ndarray], *, population: np.ndarray,
                  target_synthetic: np.ndarray, members: np.ndarray, non_members: np.ndarray,
                  shadows: int, shadow_rows: int, rng: np.random.Generator) -> ShadowAttack:
    """AUC of a membership classifier trained on ``shadows`` shadow generators.

    ``fit_sample(indices, seed)`` trains the target's algorithm (same config, same ε) on the
    ``population`` rows at ``indices`` and returns encoded synthetic rows. ``population`` is the
    attacker's own sample of the population (disjoint from ``members`` and ``non_members``): a
    third is its reference for the features, and each shadow trains on ``shadow_rows`` of the rest,
    with as many other rows of the rest as its non-members. The classifier is then scored on the
    target: ``members`` (its training rows) vs ``non_members`` (a holdout).
    """
    cut = len(population) // 3
    reference, pool = population[:cut], population[cut:]
    if shadows < 2 or shadow_rows * 2 > len(pool):
        raise ConfigError(f"need >= 2 shadows and a population of at least 3 x {shadow_rows} rows, got "
                          f"{shadows} shadows and {len(population)} rows")
    feats, labels, groups = [], [], []
    for s in range(shadows):
        perm = rng.permutation(len(pool))
        inside, outside = pool[perm[:shadow_rows]], pool[perm[shadow_rows:2 * shadow_rows]]
        synthetic = fit_sample(cut + perm[:shadow_rows], int(rng.integers(2**31)))
        probe = min(len(inside), 1000)
        cand = np.vstack([inside[:probe], outside[:probe]])
        feats.append(neighbourhood_features(synthetic, cand, reference))
        labels.append(np.r_[np.ones(probe), np.zeros(probe)])
        groups.append(np.full(2 * probe, s))
    x, y, g = np.vstack(feats), np.concatenate(labels), np.concatenate(groups)
    clf = HistGradientBoostingClassifier(max_iter=200, random_state=0)
    # the shadow AUC: trained on all shadows but the last, scored on the last (the attack's own check)
    clf.fit(x[g < shadows - 1], y[g < shadows - 1])
    shadow_auc = float(roc_auc_score(y[g == shadows - 1], clf.predict_proba(x[g == shadows - 1])[:, 1]))
    clf.fit(x, y)
    n = min(len(members), len(non_members), 1000)
    cand = np.vstack([members[:n], non_members[:n]])
    prob = clf.predict_proba(neighbourhood_features(target_synthetic, cand, reference))[:, 1]
    auc = float(roc_auc_score(np.r_[np.ones(n), np.zeros(n)], prob))
    return ShadowAttack(auc=auc, shadow_auc=shadow_auc, shadows=shadows, members=n)
