"""The silo's ClientApp that ``flwr run .`` loads: ``cadasg_dist.federation.apps.build_client_app``."""

from cadasg_dist.federation.apps import build_client_app

app = build_client_app()
