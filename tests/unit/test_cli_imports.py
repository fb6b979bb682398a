"""Light imports: building the ``cadasg`` parser and running ``cadasg sample`` load neither torch
(sampling a saved model runs on numpy from its sampling pack) nor the DP training stack (Opacus),
nor the runtimes (Ray, Flower), nor plotting and scikit-learn; a private model's ε comes from its
artifact. Checked in a fresh interpreter through ``sys.modules``, not by timing (import times vary
with the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "opacus", "ray", "flwr", "matplotlib", "sklearn", "optuna")


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


def test_sampling_a_private_model_imports_no_torch_and_prints_its_epsilon(tmp_path, mixed_table, tiny_config):
    from cadasg_dist.synthesizer import CADASG

    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]},
                "count": {"min": 0, "max": 40},
                "amount": {"min": 0, "max": 2000}, "score": {"min": -10, "max": 10}, "level": {"min": 1, "max": 3}}
    config = tiny_config.replace(**{"privacy.epsilon": 3.0, "data.columns": declared, "train.epochs": 1})
    model = CADASG(config).fit(mixed_table.drop(columns=["when", "flag"]))
    saved = model.save(tmp_path / "m")
    out = tmp_path / "rows.parquet"
    code = (f"import contextlib, io\nfrom cadasg_dist.cli import main\nbuf = io.StringIO()\n"
            f"with contextlib.redirect_stdout(buf):\n"
            f"    assert main(['sample', {str(saved)!r}, '--n', '50', '--out', {str(out)!r}]) == 0\n"
            f"assert f'ε={model.epsilon:.3f}' in buf.getvalue(), buf.getvalue()")
    loaded = _loaded_after(code)
    assert out.exists() and not any(loaded.values()), loaded


def test_the_written_out_rdp_orders_are_opacus_own():
    from opacus.accountants.rdp import RDPAccountant

    from cadasg_dist.privacy.analysis import DEFAULT_RDP_ORDERS

    assert DEFAULT_RDP_ORDERS == tuple(float(a) for a in RDPAccountant.DEFAULT_ALPHAS)


def test_a_serve_replica_loads_and_samples_a_model_without_torch(tmp_path, tiny_model):
    """What a replica runs at start and per request, in a fresh interpreter: no torch, no Opacus,
    glibc's own handling of freed memory (the sampler's reuse options grew a replica by each
    large answer it streamed: bench/serve_memory.py), and the ready heap out of the collector's
    reach (its full collections were the tail of the latency: docs/results/serving.md)."""
    saved = tiny_model.save(tmp_path / "m")
    loaded = _loaded_after(f"from cadasg_dist.serving.models import load_model\n"
                           f"from cadasg_dist.serving.service import replica_process, settle_heap\n"
                           f"from cadasg_dist.memory import keep_freed_memory\n"
                           f"import gc\n"
                           f"replica_process()\n"
                           f"loaded = load_model({str(saved)!r}, name='m')\n"
                           f"settle_heap()\n"
                           f"assert gc.get_freeze_count() > 0 and len(gc.get_objects()) < 1000\n"
                           f"assert len(loaded.model.sample(50, seed=1)) == 50\n"
                           f"assert not keep_freed_memory()  # a replica keeps glibc's defaults")
    assert not loaded["torch"] and not loaded["opacus"], loaded
