"""The ``serve`` subcommand: serve a trained model over HTTP with Ray Serve until Ctrl-C or SIGTERM.

    cadasg serve DIR [--port 8700] [--host 127.0.0.1] [--replicas MIN:MAX] [--keys-file FILE] [--ingress proxy]

Flags parse into ``cadasg_dist.serving.ServeArgs`` (the one source of defaults); a flag left out keeps its
default. The model directory, the keys and the port are checked before Ray starts, so a user error
is one line and exit code 2. Privacy: the server returns samples and public metadata only;
sampling spends no privacy budget.

Ingress: by default each replica answers HTTP itself on a loopback port (Serve's direct ingress,
PORT+1 and up) and a connection balancer in this process listens on PORT (``serving.balancer``);
``--ingress proxy`` puts Serve's own HTTP proxy on PORT instead (one more hop: about a quarter of the
requests a second at 32 clients, docs/results/serving.md).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import threading
from typing import Any

from cadasg_dist.cli.common import run_alone
from cadasg_dist.errors import ConfigError

APP_NAME = "cadasg"


def _replicas(value: str) -> tuple[int, int]:
    try:
        lo, _, hi = value.partition(":")
        low, high = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--replicas expects MIN:MAX or N, got {value!r}") from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"--replicas needs 1 <= MIN <= MAX, got {value!r}")
    return low, high


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on an ``argparse`` subparsers object; returns its parser."""
    from cadasg_dist.serving.settings import DEFAULT_PORT

    p = subparsers.add_parser(
        "serve", help="serve synthetic rows over HTTP (Ray Serve)",
        description="Serve a trained model: GET /healthz, GET /v1/model, POST /v1/sample. Requests need an "
                    "API key (X-API-Key) from --keys-file or $CADASG_API_KEYS; make one with "
                    "`python -m cadasg_dist.serving.auth new --model NAME`.")
    p.add_argument("model", help="model directory written by `cadasg train`")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT}; not "
                   "8000, which Flower's SuperLink uses)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--replicas", type=_replicas, metavar="MIN:MAX", help="autoscaling bounds, e.g. 1:2 or 2")
    p.add_argument("--name", help="model name that API keys refer to (default: the directory's name)")
    p.add_argument("--keys-file", help="file of 'sha256:<hex> model=<name|*>' lines")
    p.add_argument("--allow-anonymous", action="store_true", default=None,
                   help="serve without API keys (local experiments only)")
    p.add_argument("--max-rows", type=int, help="largest n per request (above it: 413)")
    p.add_argument("--ingress", choices=("balancer", "proxy"), default="balancer",
                   help="balancer (default): replicas answer on 127.0.0.1 PORT+1, PORT+2, ... and this process "
                        "spreads connections over them from PORT; proxy: Serve's HTTP proxy on PORT")
    p.set_defaults(run=run, func=run)  # cli.main dispatches on func
    return p


def serve_args(args: argparse.Namespace) -> Any:
    from cadasg_dist.serving.settings import ServeArgs

    raw: dict[str, Any] = {"model_dir": args.model}
    for flag, key in (("name", "model_name"), ("keys_file", "keys_file"),
                      ("allow_anonymous", "allow_anonymous"), ("max_rows", "max_rows")):
        if getattr(args, flag, None) is not None:
            raw[key] = getattr(args, flag)
    if args.replicas is not None:
        raw["min_replicas"], raw["max_replicas"] = args.replicas
    return ServeArgs.parse(raw)


def _check_port(host: str, port: int) -> None:
    """Refuse a port something listens on (one closed a moment ago, in TIME_WAIT, is fine: the
    servers bind with SO_REUSEADDR too)."""
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range (1-65535); choose another --port")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None


def run(args: argparse.Namespace) -> int:
    """Deploy, print the URL, block until Ctrl-C or SIGTERM, then drain and shut Serve and Ray down.
    Returns 0."""
    from cadasg_dist.serving.auth import KeyRing
    from cadasg_dist.serving.models import load_model

    sargs = serve_args(args)
    keys = KeyRing.from_sources(sargs.keys_file, sargs.keys_env)
    if not len(keys) and not sargs.allow_anonymous:
        raise ConfigError(f"no API keys: give --keys-file or set ${sargs.keys_env} (make one with "
                          "`python -m cadasg_dist.serving.auth new --model NAME`), "
                          "or --allow-anonymous for a local test")
    loaded = load_model(sargs.model_dir, name=sargs.name, version=sargs.version)  # ArtifactError: one line
    _check_port(args.host, args.port)
    balanced = args.ingress == "balancer"
    ports = direct_ports(args.port, sargs.max_replicas) if balanced else []
    if balanced:
        if ports[-1] > 65535:
            raise ConfigError(f"--port {args.port}: the replicas need the ports up to {ports[-1]}, past 65535; "
                              "choose a lower --port")
        for port in ports:
            _check_port("127.0.0.1", port)
        direct_ingress_env(args.port, sargs.max_replicas)
    start_private_ray()
    import ray
    from ray import serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # after ray.init, which installs its own SIGTERM handler
    # Balanced, Serve's proxy (which it starts anyway) stays on a loopback port of its own: the
    # balancer's fallback while no replica runs.
    serve.start(http_options={"host": "127.0.0.1", "port": _free_port()} if balanced
                else {"host": args.host, "port": args.port})
    balancer = _deploy(args, sargs)
    print(f"serving model {loaded.name!r} version {loaded.version} at http://{args.host}:{args.port} "
          f"({sargs.min_replicas}-{sargs.max_replicas} replicas, {len(keys)} API keys); Ctrl-C or SIGTERM stops",
          flush=True)
    if balanced:
        print(f"replicas answer on 127.0.0.1 ports {ports[0]}-{ports[-1]}; port {args.port} balances "
              "connections over them", flush=True)
    try:
        stop.wait()
        print("stopping: draining in-flight requests", flush=True)
    finally:
        if balancer is not None:
            balancer.close()  # no new connections; the open ones end as their replica drains
        serve.shutdown()  # each replica finishes its requests (graceful_shutdown_timeout_s) before it stops
        if balancer is not None:
            balancer.stop(grace_s=5)
        ray.shutdown()
    return 0


def _deploy(args: argparse.Namespace, sargs: Any) -> Any:
    """Run the application and, with ``--ingress balancer``, the balancer on ``--port`` (returned)."""
    from ray import serve

    from cadasg_dist.serving.app import build_app
    from cadasg_dist.serving.balancer import Balancer, serve_targets

    try:
        serve.run(build_app(sargs), name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:
        serve.shutdown()
        raise ConfigError(f"the deployment failed: {str(exc).splitlines()[0]}") from None
    if args.ingress != "balancer":
        return None
    balancer = Balancer(args.host, args.port, serve_targets(APP_NAME, "127.0.0.1"))
    try:
        balancer.start()
    except OSError as exc:
        serve.shutdown()
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); choose another --port") from None
    return balancer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct_ports(port: int, max_replicas: int) -> list[int]:
    """The replicas' own ports: four for each replica. A replacement starts while the replica it
    replaces still drains on its port, and Serve never again gives out a port that a replica once
    failed to open (another program took it meanwhile, say), so the range leaves room for both."""
    return list(range(port + 1, port + 1 + 4 * max_replicas))


def direct_ingress_env(port: int, max_replicas: int) -> None:
    """Ray Serve's direct ingress (read once, when Serve starts): replicas run their own HTTP server
    (the same app: keys and limits apply) on ports right above ``port``. A stopping replica keeps its
    port open for the draining period so the balancer drops it first; 5 s is enough locally (Serve's
    default is 30 s). Two settings of Serve's throughput-optimized profile apply too: the app runs
    on the replica's own event loop rather than a second thread's (no thread hop a request; the app
    samples and encodes in its own thread pool, so the loop stays free), and access-log lines are
    written in batches."""
    os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(port + 1)
    os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(direct_ports(port, max_replicas)[-1])
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "5")
    os.environ.setdefault("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "0")
    os.environ.setdefault("RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE", "1000")


def start_private_ray() -> None:
    """Start this process's own Ray (never join one that ``ray start`` left on the machine) with token
    authentication: Ray's GCS and raylet listen on every interface, so a fresh random token, held only
    in this process's environment and inherited by the Ray processes it starts, is what keeps other
    users of the network from running code in it. HTTP stays on ``--host``. Ray reads its auth
    settings once, when it is first imported, so they are set before the import."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] == "token":
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, configure_logging=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m cadasg_dist.cli.serve DIR ...``: the subcommand on its own (same flags)."""
    return run_alone("serve", add_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
