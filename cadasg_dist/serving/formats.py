"""Rows as JSON, CSV or Arrow IPC bytes, in chunks so a large answer is streamed, not built whole.

JSON: ``{"model": ..., "model_version": ..., "seed": ..., "n": ..., "columns": [...], "rows": [{...}]}``
with missing values (NaN, NA, NaT, ±inf) as ``null``, datetimes as ISO 8601 strings and floats to 15
significant digits. CSV: a header line, then rows; missing values are empty fields. Arrow: one IPC
stream (schema, then record batches); exact values and dtypes, the fastest to produce and parse.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

Format = Literal["json", "csv", "arrow"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
}


def encode(frame: pd.DataFrame, fmt: str, *, header: dict[str, Any], chunk_rows: int) -> Iterator[bytes]:
    """The answer's bytes, one piece per ``chunk_rows`` rows (join them for a small answer).

    ``header`` (model, version, seed...) goes into the JSON envelope; CSV and Arrow carry it in HTTP
    headers instead.
    """
    return encode_frames(iter([frame]), fmt, header=header, chunk_rows=chunk_rows)


def encode_frames(frames: Iterator[pd.DataFrame], fmt: str, *, header: dict[str, Any], chunk_rows: int
                  ) -> Iterator[bytes]:
    """Like :func:`encode` over consecutive frames of one answer, read lazily one at a time, so an
    answer generated chunk by chunk is never held whole. The first frame fixes the columns (and
    the Arrow schema); every frame must have them."""
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(MEDIA_TYPES)}")
    pieces = (part for frame in frames for part in _chunks(frame, chunk_rows))
    return {"json": _json, "csv": _csv, "arrow": _arrow}[fmt](pieces, header)


def _chunks(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, max(len(frame), 1), max(rows, 1)):
        yield frame.iloc[start:start + rows]


def _json(parts: Iterator[pd.DataFrame], header: dict[str, Any]) -> Iterator[bytes]:
    opened, first = False, True
    for part in parts:
        if not opened:
            envelope = {**header, "columns": [str(c) for c in part.columns]}
            yield (json.dumps(envelope)[:-1] + ', "rows": [').encode()
            opened = True
        records = part.to_json(orient="records", date_format="iso", double_precision=15)[1:-1]
        if records:
            yield (records if first else "," + records).encode()
            first = False
    yield b"]}"


def _csv(parts: Iterator[pd.DataFrame], header: dict[str, Any]) -> Iterator[bytes]:
    for i, part in enumerate(parts):
        yield part.to_csv(index=False, header=i == 0).encode()


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as an Arrow table; an object column Arrow cannot type (mixed values) becomes text."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        fixed = frame.copy()
        for col in fixed.columns:
            try:
                pa.array(fixed[col], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                fixed[col] = fixed[col].map(str, na_action="ignore")
        return pa.Table.from_pandas(fixed, preserve_index=False)


def _arrow(parts: Iterator[pd.DataFrame], header: dict[str, Any]) -> Iterator[bytes]:
    sink = io.BytesIO()
    writer = schema = None
    for part in parts:
        if writer is None:
            table = arrow_table(part)
            schema = table.schema
            writer = pa.ipc.new_stream(sink, schema)
            yield _drain(sink)
        else:  # later chunks take the first one's types (an all-null chunk must not change them)
            table = arrow_table(part).cast(schema) if schema is not None else arrow_table(part)
        for batch in table.to_batches():
            writer.write_batch(batch)
        yield _drain(sink)
    if writer is not None:
        writer.close()
    yield _drain(sink)  # the end-of-stream marker


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def read_arrow(data: bytes) -> pd.DataFrame:
    """Inverse of the Arrow format (used by the client and tests)."""
    return pa.ipc.open_stream(data).read_pandas()
