"""The HTTP API: a FastAPI app over a ``SamplingService``, usable with or without Ray.

    GET  /healthz      200 when a model is loaded, else 503 (no key needed)
    GET  /v1/model     public metadata of the version being served
    POST /v1/sample    {"n": 1000, "context": {"female": 1}, "seed": 7, "format": "json"|"csv"|"arrow"}

Status codes: 400 malformed JSON, 401 no or unknown key, 403 key not allowed on this model, 413 n
above the maximum or body too large, 422 invalid field or unknown context column/value (with the
valid ones), 429 rate limited, 503 no model loaded. Bad input is never a 500. Every sample answer
names the version that produced it (``X-Model-Version``) and the seed it used (``X-Seed``: pass it
back to get the same rows). Header values are percent-encoded (a model name need not be Latin-1).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from cadasg_dist._version import __version__
from cadasg_dist.errors import CADASGError, ContextError
from cadasg_dist.serving.formats import MEDIA_TYPES, encode, encode_frames
from cadasg_dist.serving.service import RequestRejected, SamplingService, trim_heap

log = logging.getLogger(__name__)

ContextValue = (Annotated[str, StringConstraints(max_length=256)]
                | Annotated[int, Field(strict=True, ge=-(2**53), le=2**53)]
                | Annotated[float, Field(allow_inf_nan=False)] | bool | None)


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(strict=True, gt=0, description="rows to generate (at most the server's max_rows, else 413)")
    context: dict[Annotated[str, StringConstraints(max_length=256)], ContextValue] = Field(
        default_factory=dict, max_length=64, description="context column -> value; others follow the model")
    seed: int | None = Field(None, strict=True, ge=0, le=2**63 - 1,
                             description="same seed, same rows; omitted: a random one, returned in X-Seed")
    format: Literal["json", "csv", "arrow"] = "json"


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": {"type": "object"}}}}
    for code, text in [(400, "malformed JSON"), (401, "missing or unknown API key"),
                       (403, "key not allowed on this model"), (413, "n or body too large"),
                       (422, "invalid request or unknown context (lists the valid values)"),
                       (429, "rate limited (Retry-After)"), (503, "no model loaded")]
}


def create_app(service: SamplingService) -> FastAPI:
    """The ASGI app; routes read ``service.current`` per request, so a version swap is atomic."""
    app = FastAPI(title="CA-DASG sampling", version=__version__,
                  description="Context-conditioned synthetic rows. Sampling spends no privacy budget.")
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False)

    async def caller(request: Request, key: str | None = Security(api_key)) -> None:
        if not key:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        service.authorize(key)

    @app.exception_handler(RequestRejected)
    async def _rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.get("/healthz", responses={503: _ERRORS[503]})
    async def healthz() -> JSONResponse:
        cur = service.current
        if cur is None:
            return JSONResponse({"status": "unavailable", "detail": "no model loaded"}, status_code=503)
        return JSONResponse({"status": "ok", "model": cur.name, "model_version": cur.version})

    @app.get("/v1/model", responses={k: _ERRORS[k] for k in (401, 403, 429, 503)})
    async def model_info(_: None = Security(caller)) -> JSONResponse:
        cur = service.model()
        limits = {"max_rows": service.args.max_rows, "formats": list(MEDIA_TYPES)}
        return JSONResponse({**cur.public, "limits": limits}, headers={"X-Model-Version": quote(cur.version)})

    body_schema = {"content": {"application/json": {"schema": SampleRequest.model_json_schema()}}, "required": True}
    ok = {"description": "rows", "content": {t: {} for t in MEDIA_TYPES.values()}}

    @app.post("/v1/sample", openapi_extra={"requestBody": body_schema},
              responses={200: ok, **{k: v for k, v in _ERRORS.items()}})
    async def sample(request: Request, _: None = Security(caller)) -> Response:
        return await sample_response(service, request)

    return app


async def sample_response(service: SamplingService, request: Request) -> Response:
    """One /v1/sample request: checks, the rows (batched with concurrent requests), the encoded answer."""
    start = time.perf_counter()
    req = await _parse(request, service.args.max_body_bytes)
    if req.n > service.args.max_rows:
        raise RequestRejected(413, f"n={req.n} is above this server's maximum of {service.args.max_rows} "
                              "rows; ask for fewer rows per request")
    loaded = service.model()
    if req.context:
        try:
            loaded.model.extractor.resolve(req.context)
        except ContextError as exc:
            raise RequestRejected(422, str(exc), valid=loaded.valid_context) from None
    seed = req.seed if req.seed is not None else secrets.randbits(63)
    headers = {"X-Model": quote(loaded.name), "X-Model-Version": quote(loaded.version), "X-Seed": str(seed),
               **_reconnect(service)}
    envelope = {"model": loaded.name, "model_version": loaded.version, "seed": seed}
    media = MEDIA_TYPES[req.format]
    if req.n > service.args.chunk_rows:  # generated and sent one chunk at a time: bounded replica memory
        try:
            frames = service.stream(loaded, req.n, req.context, seed)
        except CADASGError as exc:
            raise RequestRejected(422, str(exc)) from None
        pieces = encode_frames(frames, req.format, header={**envelope, "n": req.n}, chunk_rows=service.args.chunk_rows)
        headers.update({"X-Rows": str(req.n), "X-Batch-Requests": "1"})
        return StreamingResponse(_released(c for c in pieces if c), media_type=media, headers=headers)
    try:
        out = await service.sample(loaded, req.n, req.context, seed)
    except CADASGError as exc:  # a library check we did not repeat above: still the caller's input
        raise RequestRejected(422, str(exc)) from None
    headers.update({"X-Rows": str(len(out.frame)), "X-Batch-Requests": str(out.batch_requests)})
    chunks = encode(out.frame, req.format, header={**envelope, "n": len(out.frame)}, chunk_rows=service.args.chunk_rows)
    if req.n <= service.args.merge_max_n:
        body = b"".join(chunks)
        headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.1f}"
        return Response(body, media_type=media, headers=headers)
    body = await asyncio.get_running_loop().run_in_executor(service.pool, b"".join, chunks)
    return Response(body, media_type=media, headers=headers)


def _reconnect(service: SamplingService) -> dict[str, str]:
    """``Connection: close`` on every ``reconnect_every``-th answer of this replica: the client's
    next request opens a new connection, which the balancer of ``cadasg serve`` gives to the least
    busy replica (one that autoscaling added, say). Clients reconnect without losing a request."""
    service.answers += 1
    every = service.args.reconnect_every
    return {"Connection": "close"} if every and service.answers % every == 0 else {}


def _released(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """``pieces``, then the freed chunk buffers handed back to the OS (glibc keeps freed arenas
    otherwise, and a replica that once streamed 1M rows would keep that footprint for good)."""
    try:
        yield from pieces
    finally:
        trim_heap()


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 before it is read when ``Content-Length`` says it is too large, and
    as soon as a chunked body passes the limit while it is read (never buffered beyond it)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestRejected(400, f"Content-Length must be a number of bytes, got {declared[:32]!r}")
        if int(declared) > max_bytes:
            raise RequestRejected(413, f"request body of {int(declared)} bytes is above the {max_bytes}-byte limit")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > max_bytes:
            raise RequestRejected(413, f"request body is above the {max_bytes}-byte limit")
        parts.append(part)
    return b"".join(parts)


async def _parse(request: Request, max_bytes: int) -> SampleRequest:
    body = await _read_body(request, max_bytes)
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RequestRejected(400, f"the body is not valid JSON ({type(exc).__name__}); send "
                              '{"n": 100, "context": {...}, "seed": 7, "format": "json"}') from None
    try:
        return SampleRequest.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestRejected(422, f"{where}: {first['msg']}", errors=errors) from None
