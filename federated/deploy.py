"""Deployment mode on one machine: a SuperLink and one SuperNode per silo as real processes, TLS on.

    python federated/deploy.py DATA --silo-column COL --config FILE --out DIR [--rounds R]
    python federated/deploy.py DATA --silo-column COL --silos NAME,NAME --config FILE --out DIR
    python federated/deploy.py --silos DIR_OF_FILES --config FILE --out DIR

What it does (docs/guides/federated.md has the same recipe as shell commands):

1. generates a CA and a server certificate for 127.0.0.1/localhost (``WORKDIR/certs``);
2. gives each silo its own file (``WORKDIR/silos/NAME.parquet``, or the files of ``--silos DIR``):
   a table split by a column gets one file per DECLARED silo (``--silos NAME,...`` or the
   column's ``data.columns.COL.categories``; a private run refuses without them), an empty one
   for a silo without rows, and rows of an undeclared silo go nowhere (as ``cadasg federated``);
3. builds the public federation plan (``WORKDIR/plan.json``) by a plan round: one plan party
   per silo, each reading only its own silo file, answers with its noisy statistics, and only
   their secure sum builds the plan (cadasg_dist/federation/plan_round.py; no pooled table). On
   this loopback demo the parties run in this process before the SuperNodes start; in a
   consortium each runs at its silo;
4. starts ``flower-superlink`` with ``--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile`` on an
   explicit port (flwr 1.41 serves everything over HTTP on 127.0.0.1:8000 by default, Ray Serve's
   port too), and one ``flower-supernode`` per silo with ``--root-certificates`` and
   ``--node-config "data-path=... silo-name=... partition-id=..."``: each reads only its own file;
5. runs the app with ``flwr run`` against that SuperLink (a connection in a private FLWR_HOME),
   waits for the artifact, and stops every process it started.

Every process gets its own FLWR_HOME under WORKDIR, so nothing touches ~/.flwr. Logs are in
WORKDIR/logs (``flwr-run.log`` is written as the run goes: one line per round). Each SuperNode runs
in its own process group, listed in WORKDIR/supernodes.json (silo name -> process group id): killing
one group is losing that silo's machine. Rounds then go to the SuperNodes still connected; the run
survives losing ``federated.max_dropouts`` of them, and stops (exit 1, one "run stopped" line on
stderr, no model) when a round cannot reach ``federated.min_clients`` silos after its retries.
Exit code 0 when the model was written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def generate_certificates(out: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.pem, server.key): a throwaway CA and a server certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("cadasg-deploy-ca")).issuer_name(name("cadasg-deploy-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(sans, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = out / "ca.crt", out / "server.pem", out / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def silo_files(args: argparse.Namespace, workdir: Path) -> list[tuple[str, Path]]:
    """(name, file) per silo; a table split by a column is written out one file per silo, named
    by the declaration exactly as ``cadasg federated`` names its simulated silos."""
    from cadasg_dist.cli.federated import build_configs
    from cadasg_dist.federation.simulation import silo_rows, silo_sources

    if not args.silo_column:
        files = sorted(p for p in Path(args.silos).iterdir() if p.suffix.lower() in (".csv", ".parquet"))
        return [(p.stem, p.resolve()) for p in files]
    cfg, _ = build_configs(args)
    sources, df = silo_sources(args.data, args.silo_column, args.silos, cfg)  # refuses undeclared private silos
    out = workdir / "silos"
    out.mkdir(parents=True, exist_ok=True)
    silos = []
    for source in sources:
        path = out / f"{source['name']}.parquet"
        df[silo_rows(df[args.silo_column], [source["value"]])].reset_index(drop=True).to_parquet(path)
        silos.append((source["name"], path))
    return silos


def check_dropouts(args: argparse.Namespace, n_silos: int) -> None:
    """Refuse, before any process starts, a federation that cannot lose federated.max_dropouts silos."""
    from cadasg_dist.cli.federated import build_configs
    from cadasg_dist.federation.config import check_silo_count

    check_silo_count(build_configs(args)[1], n_silos)


def build_plan_file(args: argparse.Namespace, silos: list[tuple[str, Path]], workdir: Path) -> Path:
    """The public plan (``WORKDIR/plan.json``) by a plan round over the silos: one party per silo,
    each reading only its own file (``federation.plan_round``); no table is pooled."""
    from cadasg_dist.cli.federated import build_configs
    from cadasg_dist.data.io import read_table
    from cadasg_dist.federation.plan import build_round_plan
    from cadasg_dist.federation.plan_round import PlanParty

    cfg, fed = build_configs(args)
    parties = [PlanParty(name, read_table(path, allow_empty=True)) for name, path in silos]
    plan = build_round_plan(parties, cfg, fed)
    path = workdir / "plan.json"
    path.write_text(plan.to_json())
    return path


class Processes:
    """The processes this script started, each in its own session; stopped by their ids."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.logs / (name + '.log')}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def home(workdir: Path, name: str) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(workdir / "homes" / name)
    # The SuperLink and SuperNodes start `flower-superexec` and friends by name: put this
    # environment's scripts first on PATH, or a run from `.venv/bin/python` (not an activated
    # venv, as in `make test`) finds none of them.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    Path(env["FLWR_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def wait_for_port(port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def run_config(args: argparse.Namespace, plan: Path, n_silos: int) -> str:
    values = {"plan": str(plan), "num-silos": n_silos, "out": str(Path(args.out).resolve()), "data": "",
              "silo-column": "", "silos": "", "config": str(Path(args.config).resolve()) if args.config else ""}
    if args.rounds is not None:
        values["rounds"] = args.rounds
    if args.secagg is not None:
        values["secagg"] = args.secagg
    if args.inject_failure:
        values["inject-failure"] = args.inject_failure
    return " ".join(f"{k}={_toml(v)}" for k, v in values.items())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return f"'{value}'"


def deploy(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cadasg-deploy-")).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    ca, cert, key = generate_certificates(workdir / "certs")
    silos = silo_files(args, workdir)
    check_dropouts(args, len(silos))
    plan = build_plan_file(args, silos, workdir)
    procs = Processes(workdir / "logs")
    try:
        procs.start("superlink", [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca), "--ssl-certfile",
                                  str(cert), "--ssl-keyfile", str(key), "--host", "127.0.0.1", "--port",
                                  str(args.port), "--isolation", "subprocess",
                                  "--disable-runtime-dependency-installation"], home(workdir, "superlink"))
        wait_for_port(args.port, 60)
        for i, (name, path) in enumerate(silos):
            node_config = f"data-path='{path}' silo-name='{name}' partition-id={i}"
            procs.start(f"supernode-{name}", [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{args.port}",
                                              "--root-certificates", str(ca), "--node-config", node_config,
                                              "--host", "127.0.0.1", "--port", str(args.node_port + i),
                                              "--isolation", "subprocess"], home(workdir, f"node-{i}"))
        groups = {name.removeprefix("supernode-"): proc.pid for name, proc in procs.procs if name != "superlink"}
        (workdir / "supernodes.json").write_text(json.dumps(groups))
        env = home(workdir, "cli")
        (Path(env["FLWR_HOME"]) / "config.toml").write_text(
            f'[superlink]\ndefault = "cadasg"\n\n[superlink.cadasg]\naddress = "127.0.0.1:{args.port}"\n'
            f'root-certificates = "{ca}"\n')
        time.sleep(1.0)
        procs.check()
        print(f"SuperLink on 127.0.0.1:{args.port} (TLS), {len(silos)} SuperNodes; workdir {workdir}", flush=True)
        cmd = [str(BIN / "flwr"), "run", str(ROOT), "cadasg", "--stream", "--run-config",
               run_config(args, plan, len(silos))]
        code, output = run_app(cmd, env, workdir / "logs" / "flwr-run.log", args.timeout)
        done = (Path(args.out) / "meta.json").exists()
        if code != 0 or not done:
            return report_failure(code, output, workdir / "logs")
        print(f"model written to {args.out}")
        return 0
    finally:
        procs.stop()


def run_app(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, str]:
    """``flwr run --stream``, its output written to ``log`` as it comes; (exit code, output)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = 124
    return code, log.read_text(errors="replace")


def report_failure(code: int, output: str, logs: Path) -> int:
    """One clear line on stderr: the ServerApp's "run stopped" reason when it gave one."""
    from cadasg_dist.federation.apps import STOPPED

    stopped = [line[line.index(STOPPED):] for line in output.splitlines() if STOPPED in line]
    if stopped:
        print(f"cadasg: {stopped[-1]}", file=sys.stderr)
    else:
        print(f"deployment run failed (flwr run exit {code}); logs in {logs}", file=sys.stderr)
        print(output[-3000:], file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?")
    p.add_argument("--silo-column", help="split DATA into silos by this column (names: --silos or its declared "
                                         "categories)")
    p.add_argument("--silos", metavar="DIR|NAMES", help="one file per silo; with --silo-column, the silos' names")
    p.add_argument("--config", help="YAML run config (with its federated: section)")
    p.add_argument("--codebook", help="confirmed codebook (cadasg schema): declared kinds, categories, bounds")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int)
    p.add_argument("--secagg", dest="secagg", action="store_true", default=None)
    p.add_argument("--no-secagg", dest="secagg", action="store_false")
    p.add_argument("--inject-failure", help="testing: SILO:ROUND:raise|hang")
    p.add_argument("--workdir", help="certificates, silo files, plan, logs (default: a new temporary dir)")
    p.add_argument("--port", type=int, default=19091, help="SuperLink port (HTTP API, TLS)")
    p.add_argument("--node-port", type=int, default=19191, help="first SuperNode runtime port (one per silo)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    args = p.parse_args(argv)
    # build_configs reads these attributes of `cadasg federated`'s parser
    for name in ("target", "context", "epsilon", "delta", "privacy_unit", "seed", "local_epochs", "strategy",
                 "proximal_mu", "server_lr", "local_lr_scale", "min_clients", "round_timeout"):
        setattr(args, name, None)
    args.set = [f"federated.inject_failure={args.inject_failure}"] if args.inject_failure else []
    if args.silo_column and not args.data:
        p.error("--silo-column needs DATA")
    if not args.silo_column and not args.silos:
        p.error("give DATA --silo-column COL, or --silos DIR")
    from cadasg_dist.errors import CADASGError

    try:
        return deploy(args)
    except CADASGError as err:  # a bad config or declaration: one line, before (or instead of) any process
        print(f"deploy.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
