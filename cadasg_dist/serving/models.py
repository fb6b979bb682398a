"""A loaded model version and the metadata the endpoint may show about it.

Privacy: the endpoint shows samples and *public* metadata only. Public here means: column names,
kinds and dtypes (a data dictionary); bounds and categories only where they were declared in
config (values estimated from the private rows are withheld, even though samples hint at them);
the context domain (every sample shows it); and the ledger's ε and δ. Never the training row
count, the cache's counts, the config or the history.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cadasg_dist.errors import ArtifactError
from cadasg_dist.sampled import load_for_sampling
from cadasg_dist.sampling.api import Sampling
from cadasg_dist.serving.sampler import merge_is_exact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One artifact, loaded; requests hold on to the version they started with."""

    model: Sampling  # loaded for sampling: numpy only (``sampled.load_for_sampling``)
    name: str
    version: str
    model_dir: str
    content_hash: str  # SHA-256 of the artifact's checksums.json (identifies its bytes)
    loaded_at: str
    merge: bool  # merged batches give exactly sample()'s rows (checked at load)
    public: dict[str, Any] = field(repr=False)
    valid_context: dict[str, list[Any]] = field(repr=False)  # context column -> its values

    @property
    def columns(self) -> list[str]:
        return list(self.valid_context)


def content_hash(model_dir: str | Path) -> str:
    path = Path(model_dir) / "checksums.json"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ArtifactError(f"{model_dir} is not a CA-DASG model directory ({exc.strerror})") from None


def load_model(model_dir: str | Path, *, name: str, version: str | None = None) -> LoadedModel:
    """Load and check an artifact (raises ``ArtifactError``); the version defaults to its hash."""
    digest = content_hash(model_dir)
    model = load_for_sampling(model_dir)
    merge = merge_is_exact(model)  # also warms the sampler up before the first request
    if not merge:
        log.warning("model %s: merged batches would not reproduce sample() exactly; serving unmerged", name)
    version = version or digest[:12]
    loaded_at = datetime.now(UTC).isoformat()
    valid = _context_values(model)
    public = public_metadata(model, name=name, version=version, loaded_at=loaded_at, valid=valid)
    return LoadedModel(model, name, version, str(model_dir), digest, loaded_at, merge, public, valid)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if v is None or isinstance(v, bool | int | float | str) else str(v)


def _context_values(model: Sampling) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for ctx in model.contexts:
        for col, value in ctx.items():
            values = out.setdefault(col, [])
            if _jsonable(value) not in values:
                values.append(_jsonable(value))
    return out


def public_metadata(model: Sampling, *, name: str, version: str, loaded_at: str,
                    valid: dict[str, list[Any]]) -> dict[str, Any]:
    """What ``GET /v1/model`` shows (see the module docstring for what is left out and why)."""
    schema, columns = model.schema, []
    derived = {d.name: d for d in schema.derived}
    for column in schema.output_names:
        if column in derived:  # declared: an indicator of another column
            d = derived[column]
            columns.append({"name": column, "kind": "derived", "dtype": d.dtype, "of": d.of,
                            "equals": _jsonable(d.equals), "nullable": bool(schema[d.of].has_missing)})
            continue
        col = schema[column]
        entry: dict[str, Any] = {"name": col.name, "kind": col.kind, "dtype": col.dtype,
                                 "nullable": bool(col.has_missing)}
        if col.sources.get("bounds") == "declared":
            entry["min"], entry["max"] = _jsonable(col.min), _jsonable(col.max)
        if col.categories is not None and col.sources.get("categories") == "declared":
            entry["categories"] = [_jsonable(c) for c in col.categories]
        columns.append(entry)
    ledger = model.ledger
    eps = ledger.epsilon() if ledger.private else math.inf
    return {
        "name": name, "version": version, "created": model.meta.get("created"), "loaded_at": loaded_at,
        "cadasg_version": model.meta.get("cadasg_version"), "format_version": model.meta.get("format_version"),
        "schema": {"columns": columns},
        "contexts": {"columns": list(valid), "values": valid,
                     "known": [{k: _jsonable(v) for k, v in c.items()} for c in model.contexts]},
        "privacy": {"private": ledger.private, "epsilon": eps if math.isfinite(eps) else None,
                    "delta": ledger.delta, "accountant": ledger.accountant,
                    "note": ("samples are post-processing of the trained model and spend no privacy budget"
                             if ledger.private else "NOT PRIVATE: trained without differential privacy")},
    }
