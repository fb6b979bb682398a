"""Ray Serve sampling endpoint for CA-DASG models (see serving/README.md).

``serving.api.create_app`` is the HTTP API without Ray (tests, a plain uvicorn);
``serving.app.build_app`` is the Serve application (import it only where Ray Serve is wanted).
"""

from serving.settings import DEFAULT_PORT, ServeArgs, VersionConfig

__all__ = ["DEFAULT_PORT", "ServeArgs", "VersionConfig"]
