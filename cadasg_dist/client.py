"""A small client for the CA-DASG sampling endpoint (``cadasg serve``); rows come back as pandas.

A sketch (it needs a running endpoint, so the docs test does not run it)::

    from cadasg_dist.client import Client
    with Client("http://127.0.0.1:8700", api_key="...") as c:   # or $CADASG_API_KEY
        info = c.model()                                         # schema, contexts, ε, δ, version
        rows = c.sample(1000, context={"female": 1}, seed=7)     # a DataFrame
        rows.attrs["model_version"], rows.attrs["seed"]          # what produced it

Arrow is the default wire format (exact dtypes, the fastest); ``format="json"`` or ``"csv"`` also
work. The same seed and model version give the same rows. Errors the server reports (unknown
context, rate limit, bad key) raise ``ServingError`` with the HTTP status and the server's message.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any
from urllib.parse import unquote

import httpx
import pandas as pd
import pyarrow as pa

from cadasg_dist.errors import CADASGError


class ServingError(CADASGError):
    """The server refused a request: ``status`` is the HTTP code, ``detail`` its message."""

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail, self.body = status, detail, body


class Client:
    """Talks to one server. ``http`` lets tests pass any ``httpx.Client`` (e.g. a TestClient)."""

    def __init__(self, url: str = "http://127.0.0.1:8700", *, api_key: str | None = None, timeout: float = 120.0,
                 http: httpx.Client | None = None) -> None:
        key = api_key if api_key is not None else os.environ.get("CADASG_API_KEY")
        headers = {"X-API-Key": key} if key else {}
        self._own = http is None
        self._http = http or httpx.Client(base_url=url, timeout=timeout)
        self._headers = headers

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._http.close()

    def health(self) -> dict[str, Any]:
        return self._json(self._http.get("/healthz"))

    def model(self) -> dict[str, Any]:
        """Public metadata of the served version: schema, contexts, privacy (ε, δ), version."""
        return self._json(self._http.get("/v1/model", headers=self._headers))

    def sample(self, n: int, *, context: dict[str, Any] | None = None, seed: int | None = None,
               format: str = "arrow") -> pd.DataFrame:
        """``n`` synthetic rows; ``attrs`` holds ``model``, ``model_version`` and the ``seed`` used."""
        body = {"n": n, "context": context or {}, "format": format}
        if seed is not None:
            body["seed"] = seed
        r = self._http.post("/v1/sample", json=body, headers=self._headers)
        if r.status_code != 200:
            self._json(r)
        if format == "arrow":
            frame = pa.ipc.open_stream(r.content).read_pandas()
        elif format == "csv":
            frame = pd.read_csv(io.BytesIO(r.content))
        else:
            payload = r.json()
            frame = pd.DataFrame.from_records(payload["rows"], columns=payload["columns"])
        frame.attrs.update(model=unquote(r.headers.get("x-model", "")),
                           model_version=unquote(r.headers.get("x-model-version", "")),
                           seed=int(r.headers["x-seed"]) if "x-seed" in r.headers else seed)
        return frame

    @staticmethod
    def _json(r: httpx.Response) -> dict[str, Any]:
        try:
            payload = r.json()
        except json.JSONDecodeError:
            payload = {"detail": r.text[:200]}
        if r.status_code != 200:
            detail = payload.get("detail") if isinstance(payload, dict) else str(payload)
            raise ServingError(r.status_code, str(detail), payload)
        return payload


__all__ = ["Client", "ServingError"]
