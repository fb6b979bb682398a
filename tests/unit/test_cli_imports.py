"""Light imports: building the ``cadasg`` parser and running ``cadasg sample`` load neither the DP
training stack (Opacus) nor the runtimes (Ray, Flower), nor plotting and scikit-learn. Checked in a
fresh interpreter through ``sys.modules``, not by timing (import times vary with the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("opacus", "ray", "flwr", "matplotlib", "sklearn", "optuna")


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=180,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_parser_and_the_sample_command_import_nothing_heavy(tmp_path, tiny_model):
    loaded = _loaded_after("import cadasg_dist.cli\nfrom cadasg_dist.cli import make_parser\n"
                           "make_parser().parse_args(['sample', 'm', '--n', '5', '--out', 'x.csv'])")
    assert not any(loaded.values()), loaded
    model = tiny_model.save(tmp_path / "m")
    out = tmp_path / "rows.csv"
    loaded = _loaded_after(f"from cadasg_dist.cli import main\n"
                           f"assert main(['sample', {str(model)!r}, '--n', '5', '--out', {str(out)!r}]) == 0")
    assert out.exists() and not any(loaded.values()), loaded


def test_the_written_out_rdp_orders_are_opacus_own():
    from opacus.accountants.rdp import RDPAccountant

    from cadasg_dist.privacy.analysis import DEFAULT_RDP_ORDERS

    assert DEFAULT_RDP_ORDERS == tuple(float(a) for a in RDPAccountant.DEFAULT_ALPHAS)
