"""The ServerApp that ``flwr run .`` loads: ``cadasg_dist.federation.apps.build_server_app``.

Its settings come from the run config (``[tool.flwr.app.config]``); relative paths there may point
into this app (``federated/demo.yaml``), so the app passes its own root.
"""

from pathlib import Path

from cadasg_dist.federation.apps import build_server_app

app = build_server_app(app_root=Path(__file__).resolve().parents[1])
