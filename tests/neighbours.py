"""What leaves a private run, in a form two runs can be compared by: the guarantee's own test.

A private run on a table D and on D plus one odd row, with the secret noise seeded alike, may differ
only in the noisy numbers themselves. ``artifact_view`` reads a model directory into plain data
(tensors as names and shapes: their values are noisy by construction) and ``lines_view`` masks the
numbers of printed and logged lines (their words and order must not change). ``exact_channels``
then takes three runs, (D, seed s), (D + row, seed s) and (D, seed t): a number that changes with
the row must also change with the noise seed, else it was computed from the rows without noise;
only times may differ otherwise. Anything else that differs (a key, a string, a kind, a category,
a column's place) is an exact channel too.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import safe_open

# Paths ("/" separated, "*" = any one key) that hold times, not data.
TIMES = ("/artifact/meta.json/created", "/artifact/meta.json/fit_seconds")


def artifact_view(model_dir: Path) -> dict[str, Any]:
    """Every file of a model directory: JSON with released numbers masked, tensors as names and shapes."""
    view: dict[str, Any] = {}
    for path in sorted(Path(model_dir).iterdir()):
        if path.name == "checksums.json":
            view[path.name] = sorted(json.loads(path.read_text()))  # the file names, not the hashes
        elif path.suffix == ".json":
            view[path.name] = json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                view[path.name] = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        else:
            view[path.name] = "present"
    return view


def lines_view(text: str) -> list[list[Any]]:
    """Printed or logged lines as tokens, numbers as numbers (so ``exact_channels`` can tell a noisy
    one from an exact one) and durations masked (they are times, not data)."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"\d+(\.\d+)?\s?(s|ms|sec|seconds)\b", "<time>", line)
        line = re.sub(r"\b\d{1,2}:\d{2}(:\d{2})?\b", "<time>", line)  # clock times and ETAs
        tokens = [_number(t) for t in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|[^\s\d]+", line)]
        if tokens:
            out.append(tokens)
    return out


def _number(token: str) -> Any:
    try:
        return float(token)
    except ValueError:
        return token


@contextlib.contextmanager
def seeded_secrets(seed: int) -> Iterator[None]:
    """The secret entropy as a seeded stream, so two runs draw the same noise."""
    from cadasg_dist.privacy import entropy

    stream = random.Random(seed)
    original = entropy.secret_seed
    entropy.secret_seed = lambda bits=63: stream.getrandbits(bits)
    try:
        yield
    finally:
        entropy.secret_seed = original


def leaves(obj: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a nested view by its path (dict keys and list indices joined by "/")."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {f"{path}#keys": sorted(map(str, obj))}
        for k, v in obj.items():
            out.update(leaves(v, f"{path}/{k}"))
        return out
    if isinstance(obj, list):
        out = {f"{path}#len": len(obj)}
        for i, v in enumerate(obj):
            out.update(leaves(v, f"{path}/{i}"))
        return out
    return {path: obj}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def exact_channels(base: Any, neighbour: Any, reseeded: Any) -> list[str]:
    """Where ``neighbour`` (one more row, same noise) differs from ``base`` other than in a noisy
    number: a non-number, a structure, or a number that ``reseeded`` (same rows, other noise)
    leaves equal to ``base``."""
    a, b, c = leaves(base), leaves(neighbour), leaves(reseeded)
    found = [f"{p}: only in one run" for p in sorted(set(a) ^ set(b))]
    for p in sorted(set(a) & set(b)):
        if a[p] == b[p] or any(p.startswith(t) for t in TIMES):
            continue
        if _is_number(a[p]) and _is_number(b[p]) and not p.endswith("#len") and c.get(p) != a[p]:
            continue  # it moves with the noise (or exists only under some noise): a noisy number
        found.append(f"{p}: {str(a[p])[:60]!r} -> {str(b[p])[:60]!r}")
    return found
