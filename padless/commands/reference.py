"""The option tables of the docs, generated: each command's from its argument parser (so a
table says what ``--help`` says), and the config keys from ``ModelConfig`` and
``TrainConfig``'s fields.

    python -m padless.commands.reference          # rewrite the tables in docs/*.md

A table stands between ``<!-- options: padless NAME -->`` (or ``<!-- options: model -->``,
``<!-- options: train -->``) and ``<!-- end options -->``; ``tests/test_docs.py`` checks that
every table is up to date and that every command has one.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import fields
from pathlib import Path

from padless.cli import COMMANDS, subcommand_parsers
from padless.models.config import ModelConfig
from padless.runtime.options import knobs, nullable, value_kind
from padless.training.config import TrainConfig

__all__ = ["command_table", "config_table", "render"]

SECTIONS = {"model": ModelConfig, "train": TrainConfig}
_BLOCK = re.compile(r"(<!-- options: (?P<name>[a-z ]+) -->\n)(?P<table>.*?)(<!-- end options -->)",
                    re.DOTALL)


def _cell(text: object) -> str:
    """``text`` for a Markdown table cell: pipes escaped, ``<unk>`` shown, not a tag."""
    return (str(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")
            .replace(">", "&gt;"))


def command_table(command: str) -> str:
    """The Markdown table of ``padless COMMAND``'s arguments: option, default, help."""
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for action in subcommand_parsers()[command]._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            takes = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            if action.choices is not None and not action.metavar:
                takes = " " + "\\|".join(map(str, action.choices))
            name = f"`{action.option_strings[-1]}{takes}`"
            default = action.default if action.nargs != 0 else ""
        else:
            name, default = f"`{action.metavar or action.dest}`", ""
        shown = "" if default in (None, "", argparse.SUPPRESS) or isinstance(default, list) \
            else f"`{default}`"
        said = re.sub(r" \(default [^()]*\)$", "", action.help or "") if shown else action.help
        rows.append(f"| {name} | {shown} | {_cell(said or '')} |")
    return "\n".join(rows) + "\n"


def config_table(section: str) -> str:
    """The Markdown table of a config section's keys: key, default, allowed values, help."""
    cls = SECTIONS[section]
    defaults = {f.name: f.default for f in fields(cls)}
    rows = ["| key | default | allowed | what it is |", "|---|---|---|---|"]
    for name, knob in knobs(cls):
        kind, choices = value_kind(cls, name)
        default = defaults[name]
        if choices is not None:
            allowed = ", ".join(choices)
        elif kind is bool:
            allowed = "true, false"
        elif kind is str:
            allowed = "a string"
        else:
            allowed = knob.rule(int if kind is int else float)
            if isinstance(default, tuple):
                allowed = f"{len(default)} numbers, each {allowed.removeprefix('a finite number ')}"
        if nullable(cls, name):
            allowed += ", or null"
        shown = "null" if default is None else str(default).lower() if isinstance(
            default, bool) else list(default) if isinstance(default, tuple) else default
        rows.append(f"| `{section}.{name}` | `{shown}` | {_cell(allowed)} | {_cell(knob.help)} |")
    return "\n".join(rows) + "\n"


def _table(name: str) -> str:
    if name.startswith("padless "):
        return command_table(name.removeprefix("padless "))
    return config_table(name)


def render(text: str) -> str:
    """``text`` with every option table regenerated."""
    return _BLOCK.sub(lambda m: m.group(1) + _table(m.group("name")) + m.group(4), text)


def tables_in(text: str) -> list[str]:
    """The names of the option tables in ``text`` (``padless train``, ``model``)."""
    return [m.group("name") for m in _BLOCK.finditer(text)]


def main(docs: Path = Path(__file__).parents[2] / "docs") -> int:
    """Rewrite the tables of every page under ``docs``; list the commands without one."""
    found = set()
    for page in sorted(docs.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        found.update(tables_in(text))
        if render(text) != text:
            page.write_text(render(text), encoding="utf-8")
            print(f"rewrote the option tables of {page}")
    missing = [c for c in COMMANDS if f"padless {c}" not in found]
    if missing:
        print(f"no table for: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
