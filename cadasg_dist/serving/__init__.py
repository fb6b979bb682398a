"""Ray Serve sampling endpoint for CA-DASG models (see docs/guides/serving.md).

``cadasg_dist.serving.api.create_app`` is the HTTP API without Ray (tests, a plain uvicorn);
``cadasg_dist.serving.app.build_app`` is the Serve application (import it only where Ray Serve is wanted).
"""

from cadasg_dist.serving.settings import DEFAULT_PORT, ServeArgs, VersionConfig

__all__ = ["DEFAULT_PORT", "ServeArgs", "VersionConfig"]
