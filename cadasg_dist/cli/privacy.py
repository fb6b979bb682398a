"""``cadasg privacy``: a saved model's privacy ledger, one line per mechanism.

    cadasg privacy DIR

A federated model's ledger is the run's guarantee: every silo's releases composed (a person may
have rows in several silos), or the largest silo's when the silos are declared disjoint in units;
each silo's own epsilon and the assumption are printed after it.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from cadasg_dist.cli.common import privacy_line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("privacy", help="print a model's privacy ledger")
    p.add_argument("model", help="model directory")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cadasg_dist.artifact import load_artifact
    from cadasg_dist.privacy.ledger import PrivacyLedger

    parts, _ = load_artifact(args.model)
    ledger = PrivacyLedger.from_state_dict(parts["ledger"])
    summary = ledger.summary()
    print(privacy_line(ledger))
    mechanisms = summary.get("mechanisms", [])
    width = min(28, max((len(m["name"]) for m in mechanisms), default=0))  # the step line may run over
    for mech in mechanisms:
        eps = mech.get("epsilon_alone")
        eps_text = "" if eps is None else f"  ε alone {eps:.3f}"
        print(f"  {mech['name']:<{width}} σ={mech['noise_multiplier']:<8.4g} q={mech['sample_rate']:<8.4g} "
              f"steps={mech['steps']:<6} sensitivity={mech['sensitivity']:.4g}{eps_text}")
    federated = parts["meta"].get("federated")
    if federated is not None:
        federated_lines(federated, ledger)
    return 0


def federated_lines(meta: dict[str, Any], ledger: Any) -> None:
    """Each silo's own epsilon beside the run's guarantee, and the assumption it rests on."""
    from cadasg_dist.federation.accounting import guarantee_lines

    epsilons = (meta.get("guarantee") or {}).get("silo_epsilons") or {
        name: silo.get("epsilon") for name, silo in meta.get("silos", {}).items()}
    print(f"federated: {len(epsilons)} silos")
    for name, eps in epsilons.items():
        print(f"  silo {name}: " + ("NOT PRIVATE" if eps is None or math.isinf(eps) else f"ε={eps:.3f}"))
    for line in guarantee_lines(meta, ledger):
        print(line)
