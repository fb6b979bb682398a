"""The Flower apps of a federated run, and running them on the simulation engine.

``federated/server_app.py`` and ``federated/client_app.py`` (what ``flwr run .`` loads) only expose
``build_server_app(app_root=...)`` and ``build_client_app()``; ``cadasg federated`` runs the same
two apps on the simulation engine (``run_simulation``) with settings it built itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from cadasg_dist.federation.client import handle_train, optional_secaggplus_mod
from cadasg_dist.federation.server import RunStopped, ServerSettings, run_server
from cadasg_dist.federation.simulation import anchor_app_paths, settings_from_run_config


def build_client_app() -> ClientApp:
    """A silo's ClientApp: one train handler (training rounds and the final cache release).

    The handler only unpacks the message, calls ``handle_train`` and packs the reply; the silo's
    ledger and trainer state persist in ``context.state`` between rounds. SecAgg+ messages go
    through Flower's ``secaggplus_mod``; the others pass straight through.
    """
    app = ClientApp(mods=[optional_secaggplus_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, context)

    return app


def build_server_app(settings: ServerSettings | None = None, *, app_root: Path | None = None) -> ServerApp:
    """The ServerApp: rounds, aggregation and the artifact (``run_server``).

    Without ``settings`` they come from the run config (``[tool.flwr.app.config]``, ``flwr run .
    --run-config``) when the run starts; a relative path there resolves against the working
    directory, then ``app_root`` (the directory holding the Flower app: the FAB's under
    ``flwr run``), then the installed library's project root.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if settings is not None:  # the simulation: `run_simulation` re-raises a stopped run to the CLI
            run_server(grid, context, settings)
            return
        _log_rounds()
        run_config = context.run_config if app_root is None else anchor_app_paths(context.run_config, app_root)
        try:
            run_server(grid, context, settings_from_run_config(run_config))
        except RunStopped as err:  # one line a deployment's operator (and federated/deploy.py) can find
            logging.getLogger("cadasg_dist").error("%s %s", STOPPED, err)
            raise

    return app


# The marker of a run that stopped without a model, in the ServerApp's log (``flwr run --stream``).
STOPPED = "federated run stopped:"


def _log_rounds() -> None:
    """Under ``flwr run`` the ServerApp's process has no handler for the library's logger: give it
    one, so the per-round lines (who replied, what was aggregated) reach the run's log stream."""
    lib = logging.getLogger("cadasg_dist")
    if not lib.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("cadasg: %(message)s"))
        lib.addHandler(handler)
        lib.setLevel(logging.INFO)
        lib.propagate = False


def run_simulation(settings: ServerSettings, *, ray_address: str | None = None, num_cpus: int | None = None,
                   verbose: bool = False) -> None:
    """One simulated SuperNode per silo on the Flower simulation engine (Ray).

    ``ray_address`` joins a running Ray cluster (its own processes then survive the run: Flower's
    Ray backend calls ``ray.shutdown()`` at the end, which only disconnects this driver); without
    it a local Ray is started with ``num_cpus`` CPUs (all by default).
    """
    from flwr.simulation import run_simulation as flwr_run_simulation

    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose}
    if ray_address:
        init["address"] = ray_address
    else:
        init["address"] = "local"
        if num_cpus:
            init["num_cpus"] = num_cpus
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init}
    flwr_run_simulation(server_app=build_server_app(settings), client_app=build_client_app(),
                        num_supernodes=settings.num_silos, backend_config=backend, verbose_logging=verbose)
