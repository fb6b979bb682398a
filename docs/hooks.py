"""MkDocs hooks: the reference pages are generated from the code at build time, so they cannot drift.

* ``reference/configuration.md``: every key of ``CADASGConfig`` (and ``federated.*``) with its type,
  default and one line of meaning (``cadasg_dist.config.reference``).
* ``reference/cli.md``: every ``cadasg`` subcommand and flag, from the argparse parsers
  (``cadasg_dist.cli.make_parser``).
* ``reference/http.md``: every route of the sampling endpoint, from the OpenAPI schema of
  ``cadasg_dist.serving.api.create_app`` (built without Ray and without a model).

``GENERATED`` maps each page to the function that writes it; the docs tests call them too.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def config_page() -> str:
    from cadasg_dist.config.reference import config_reference
    from cadasg_dist.federation.config import FederatedConfig

    return config_reference(extra={"federated": FederatedConfig})


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _flag_row(action: argparse.Action) -> str:
    names = ", ".join(f"`{n}`" for n in action.option_strings) or f"`{action.metavar or action.dest}`"
    if action.option_strings and action.nargs != 0:
        names += f" `{action.metavar or action.dest.upper()}`"
    default = action.default
    shown = "" if default in (None, argparse.SUPPRESS, False) or action.nargs == 0 else f"`{default}`"
    required = "yes" if action.required or not action.option_strings else ""
    helptext = (action.help or "").replace("%(default)s", str(default))
    if action.help == argparse.SUPPRESS:  # hidden from --help: an old name kept working
        helptext = "deprecated alias, hidden from --help"
    return f"| {names} | {required} | {_cell(shown)} | {_cell(helptext)} |"


def cli_page() -> str:
    from cadasg_dist.cli import COMMANDS, make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["# CLI reference", "",
             "Generated from the argparse parsers (`cadasg_dist.cli.make_parser()`) when the site is built. "
             "Every command exits 0 on success and 2 on a user error (one line naming the bad value), "
             "and writes its outputs under a temporary name renamed into place. A flag left out keeps the "
             "value of `--config FILE` or the default of the [configuration](configuration.md).", ""]
    summary = {a.dest: a.help or "" for a in sub._choices_actions}
    parts += [f"- [`cadasg {name}`](#cadasg-{name}): {_cell(summary.get(name, ''))}" for name in COMMANDS]
    for name in COMMANDS:
        cmd = sub.choices[name]
        usage = cmd.format_usage().replace("usage: ", "").strip()
        # a description is the subcommand's docstring: its usage lines' [--flag X] are not Markdown links
        about = _cell(cmd.description or summary.get(name, "")).replace("[", "\\[")
        parts += ["", f"## cadasg {name}", "", about, "",
                  "```text", usage, "```", "", "| flag | required | default | meaning |", "|---|---|---|---|"]
        parts += [_flag_row(a) for a in cmd._actions if not isinstance(a, argparse._HelpAction)]
    return "\n".join(parts) + "\n"


def openapi_schema() -> dict[str, Any]:
    from cadasg_dist.serving.api import create_app
    from cadasg_dist.serving.auth import KeyRing, hash_key, parse_keys
    from cadasg_dist.serving.service import SamplingService
    from cadasg_dist.serving.settings import ServeArgs

    keys = KeyRing(parse_keys(f"{hash_key('docs-only-key')} model=docs", "docs"))
    service = SamplingService(ServeArgs(model_dir="unused", model_name="docs"), keys=keys)
    return create_app(service).openapi()


def _fields_table(schema: dict[str, Any]) -> list[str]:
    rows = ["| field | type | required | default | meaning |", "|---|---|---|---|---|"]
    required = set(schema.get("required", []))
    for field, prop in schema.get("properties", {}).items():
        kind = prop.get("type") or " or ".join(p.get("type", "?") for p in prop.get("anyOf", []))
        if "enum" in prop:
            kind += " (" + ", ".join(map(str, prop["enum"])) + ")"
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        rows.append(f"| `{field}` | {_cell(kind)} | {'yes' if field in required else ''} | {default} "
                    f"| {_cell(prop.get('description', ''))} |")
    return rows


def _body(schema: dict[str, Any], components: dict[str, Any]) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [f"a `{name}`:", "", *_fields_table(components.get(name, {}))]
    return _fields_table(schema) if "properties" in schema else [f"`{json.dumps(schema, sort_keys=True)}`"]


def http_page() -> str:
    spec = openapi_schema()
    components = spec.get("components", {}).get("schemas", {})
    parts = ["# HTTP API reference", "",
             f"Generated from the OpenAPI schema of the sampling endpoint ({spec['info']['title']}, "
             "`cadasg_dist.serving.api.create_app`) when the site is built. "
             f"{_cell(spec['info'].get('description', ''))} How to run the server and call it: the "
             "[serving guide](../guides/serving.md).", ""]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts += ["", f"## `{method.upper()} {path}`", "", _cell(op.get("summary", "")), ""]
            if op.get("description"):
                parts += [_cell(op["description"]), ""]
            if op.get("security"):
                parts += ["Needs an API key: `X-API-Key: KEY` or `Authorization: Bearer KEY`.", ""]
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                parts += [f"Request body (`{media}`):", "", *_body(content.get("schema", {}), components), ""]
            parts += ["| status | meaning |", "|---|---|"]
            parts += [f"| {code} | {_cell(r.get('description', ''))} |" for code, r in op.get("responses", {}).items()]
    return "\n".join(parts) + "\n"


GENERATED: dict[str, Callable[[], str]] = {
    "reference/configuration.md": config_page,
    "reference/cli.md": cli_page,
    "reference/http.md": http_page,
}


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for uri, make in GENERATED.items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=make()))
    return files
