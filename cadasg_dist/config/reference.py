"""The configuration reference, generated from the config dataclasses themselves.

Every key, its type, its default and one line of meaning come from the dataclass source: the
meaning is the first sentence of the comment right above the field (or at the end of its line),
so the reference cannot drift from the code. The docs site builds it at build time
(``docs/hooks.py``); a field without a comment is an error, so a new key cannot go undocumented.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any

from cadasg_dist.config.core import CADASGConfig
from cadasg_dist.config.parsing import dataclass_of
from cadasg_dist.config.sections import ColumnOverride


@dataclasses.dataclass(frozen=True)
class Key:
    """One row of the reference: a dotted key as ``--set`` and YAML spell it."""

    key: str
    type: str
    default: str
    meaning: str


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment above it (joined) or after it, read from the class source."""
    source = textwrap.dedent(inspect.getsource(cls))
    pending: list[str] = []
    comments: dict[str, str] = {}
    line_comment: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line_comment[tok.start[0]] = tok.string.lstrip("#").strip()
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(line_comment.get(number, ""))
            continue
        match = re.match(r"\s+(\w+)\s*:", line)
        if match and line.startswith("    ") and not line.startswith("     "):
            own = [line_comment[number]] if number in line_comment else []
            text = " ".join(pending + own).strip()
            if text:
                comments[match.group(1)] = text
        if stripped and not stripped.startswith("#"):
            pending = []
    return comments


def first_sentence(text: str) -> str:
    """The meaning's one line: up to the first full stop that ends a sentence."""
    match = re.search(r"(?<![a-z]\.[a-z])(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    return (text[: match.start() + 1] if match else text).strip()


def _type_name(hint: Any) -> str:
    text = str(hint) if not isinstance(hint, type) else hint.__name__
    text = re.sub(r"typing\.|cadasg_dist\.[\w.]*\.", "", text)
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional["):-1] + " | None"
    return text.replace("NoneType", "None")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
        return "" if dataclasses.is_dataclass(value) else repr(value)
    return "required"


def dataclass_keys(cls: type, prefix: str = "") -> list[Key]:
    """Every key of ``cls`` and of the sections it holds, depth first, in declaration order.

    ``data.columns`` maps a column name to a ``ColumnOverride``: its keys are listed once, as
    ``data.columns.NAME.KEY``; ``constraints`` is a list of ``ConstraintConfig``, listed as
    ``constraints[].KEY``.
    """
    hints = typing.get_type_hints(cls)
    comments = {**field_comments(cls)}
    doc = inspect.getdoc(cls) or ""
    keys: list[Key] = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        section = dataclass_of(hint)
        if section is not None:
            keys.extend(dataclass_keys(section, f"{prefix}{field.name}."))
            continue
        meaning = comments.get(field.name) or _meaning_from_doc(doc, field.name)
        if not meaning:
            raise ValueError(f"{cls.__name__}.{field.name} has no comment: say in one line what it means")
        keys.append(Key(f"{prefix}{field.name}", _type_name(hint), _default(field), first_sentence(meaning)))
        if typing.get_origin(hint) is dict and typing.get_args(hint)[1] is ColumnOverride:
            keys.extend(dataclass_keys(ColumnOverride, f"{prefix}{field.name}.NAME."))
        entry = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else None
        if dataclasses.is_dataclass(entry):  # a list of entries (constraints): their keys once, as KEY[].ENTRY_KEY
            keys.extend(dataclass_keys(entry, f"{prefix}{field.name}[]."))
    return keys


def _meaning_from_doc(doc: str, name: str) -> str:
    """A field described in its class docstring as ````name````: the sentence that names it."""
    for sentence in re.split(r"(?<=\.)\s+", " ".join(doc.split())):
        if f"``{name}" in sentence:
            return sentence
    return ""


def markdown_table(keys: list[Key]) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for k in keys:
        cells = [f"`{k.key}`", f"`{k.type}`", f"`{k.default}`" if k.default else "", k.meaning]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def config_reference(extra: dict[str, type] | None = None) -> str:
    """The reference page: one table per top-level section of ``CADASGConfig`` (and of ``extra``,
    section name -> dataclass, for sections other layers own, such as ``federated``)."""
    keys = dataclass_keys(CADASGConfig)
    groups: dict[str, list[Key]] = {}
    for k in keys:
        groups.setdefault(k.key.split(".")[0] if "." in k.key else "(top level)", []).append(k)
    for name, cls in (extra or {}).items():
        groups[name] = dataclass_keys(cls, f"{name}.")
    parts = [
        "# Configuration reference",
        "",
        "Generated from the config dataclasses (`cadasg_dist/config/`) when the site is built, so it "
        "lists exactly the keys the code accepts. A key is set in a YAML run config (`--config FILE`, "
        "nested by section) or on the command line with `--set key=value` (values parse as YAML: "
        "`--set data.columns.id.kind=identifier`, `--set 'context.bands.age=[0, 40, 65, 120]'`). "
        "Unknown keys are refused with the list of known ones.",
    ]
    for name, group in groups.items():
        parts += ["", f"## `{name}`" if name != "(top level)" else "## Top level", "", markdown_table(group)]
    return "\n".join(parts) + "\n"


__all__ = ["Key", "config_reference", "dataclass_keys", "field_comments", "first_sentence", "markdown_table"]
