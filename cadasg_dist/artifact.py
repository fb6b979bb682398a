"""The model artifact: a directory of plain data, loaded without pickle.

Layout: ``model.safetensors`` (network weights), ``cache.safetensors`` (the context cache's
sufficient statistics), JSON for ``config``, ``schema``, ``transformer``, ``context``, ``dims``,
``ledger`` and ``meta`` (format, versions, created time), ``constraints`` when the model has
some, ``sampler.safetensors`` with its index ``sampler.json`` (the sampling pack: what a draw
reads, so sampling needs no torch; a model saved before it is folded again when loaded), and
``checksums.json`` (SHA-256 of every other file). Arrays are read and written as numpy. No
training rows are stored. Loading checks the format marker and every checksum, so a tampered or
foreign directory fails with one clear ``ArtifactError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from cadasg_dist.errors import ArtifactError

FORMAT = "cadasg-artifact"
FORMAT_VERSION = 1
JSON_PARTS = ("config", "schema", "transformer", "context", "dims", "ledger", "meta")
TENSOR_PARTS = ("model", "cache")
# Parts a model writes only when it has them (``constraints``: its declared rules; ``sampler``: the
# sampling pack's index, with ``sampler.safetensors``); checked like the rest.
OPTIONAL_JSON_PARTS = ("constraints", "sampler")
OPTIONAL_TENSOR_PARTS = ("sampler",)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_artifact(out_dir: str | Path, *, json_parts: dict[str, Any], tensor_parts: dict[str, dict[str, np.ndarray]]
                  ) -> Path:
    """Write the artifact to a temporary sibling directory, then swap it into place.

    An existing directory is replaced only if it is empty or itself an artifact.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "meta.json").exists())):
        raise ArtifactError(f"{out} exists and is not a CA-DASG model directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, obj in json_parts.items():
            (tmp / f"{name}.json").write_text(json.dumps(obj, indent=1, sort_keys=True, default=_json_default))
        for name, tensors in tensor_parts.items():
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / f"{name}.safetensors"))
        sums = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / "checksums.json").write_text(json.dumps(sums, indent=1, sort_keys=True))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_artifact(model_dir: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    d = Path(model_dir)
    if not d.is_dir():
        raise ArtifactError(f"model directory not found: {d}")
    sums_path = d / "checksums.json"
    meta_path = d / "meta.json"
    if not sums_path.is_file() or not meta_path.is_file():
        raise ArtifactError(f"{d} is not a CA-DASG model directory (no meta.json/checksums.json)")
    try:
        sums = json.loads(sums_path.read_text())
    except json.JSONDecodeError:
        raise ArtifactError(f"{d}: checksums.json is corrupt") from None
    expected = {f"{n}.json" for n in JSON_PARTS} | {f"{n}.safetensors" for n in TENSOR_PARTS}
    missing = sorted(expected - set(sums))
    if missing:
        raise ArtifactError(f"{d}: the artifact lacks {missing[0]}")
    for name, digest in sums.items():
        path = d / name
        if not path.is_file():
            raise ArtifactError(f"{d}: {name} is missing")
        if _sha256(path) != digest:
            raise ArtifactError(f"{d}: {name} does not match its checksum (the artifact was modified); "
                                "retrain or restore the original files")
    parts = {n: json.loads((d / f"{n}.json").read_text()) for n in JSON_PARTS}
    parts |= {n: json.loads((d / f"{n}.json").read_text()) for n in OPTIONAL_JSON_PARTS if f"{n}.json" in sums}
    meta = parts["meta"]
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{d} was not written by CA-DASG (format {meta.get('format')!r})")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ArtifactError(f"{d} uses artifact format {meta.get('format_version')}; this CA-DASG reads up to "
                            f"{FORMAT_VERSION}: upgrade cadasg-dist")
    try:
        names = TENSOR_PARTS + tuple(n for n in OPTIONAL_TENSOR_PARTS if f"{n}.safetensors" in sums)
        tensors = {n: load_file(str(d / f"{n}.safetensors")) for n in names}
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{d}: cannot read weights: {exc}") from None
    return parts, tensors


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")
