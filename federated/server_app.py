"""The ServerApp: rounds, aggregation and the artifact, all in ``cadasg_dist.federation`` (``server.run_server``).

Under ``flwr run .`` the settings come from the run config (``[tool.flwr.app.config]``);
``cadasg federated`` builds the app with its own settings (``build_server_app(settings)``).
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from cadasg_dist.federation.server import ServerSettings, run_server
from cadasg_dist.federation.simulation import settings_from_run_config


def build_server_app(settings: ServerSettings | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, settings or settings_from_run_config(context.run_config))

    return app


app = build_server_app()
