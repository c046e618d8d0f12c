"""Every flag made from an option field agrees with the field: its default, its bounds, its
choices; and no command types a flag for an option field by hand."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from padless.cli import subcommand_parsers
from padless.data.options import PrepareOptions
from padless.decoding.options import SearchOptions
from padless.runtime.options import knobs, value_kind
from padless.serving.settings import ServeSettings
from padless.training.config import TrainConfig

# (option type, commands that take its flags, whether a flag overrides a config's value)
OPTION_FLAGS = [
    (PrepareOptions, ["prepare"], False),
    (TrainConfig, ["train"], True),
    (ServeSettings, ["serve"], False),
    (SearchOptions, ["chat", "translate", "evaluate", "serve"], False),
]
SUBPARSERS = subcommand_parsers()


def action(command: str, flag: str) -> argparse.Action:
    return SUBPARSERS[command]._option_string_actions[flag]


def rejects(parse, text: str) -> bool:
    try:
        parse(text)
    except argparse.ArgumentTypeError:
        return True
    return False


SAMPLING_COMMANDS = {"chat"}  # the others decode by search only: no sampling flags
N_BEST_COMMANDS = {"translate"}  # the others answer each input with one line


def offered(command: str, name: str, knob) -> bool:
    return knob.flag is not None and (command in SAMPLING_COMMANDS or not knob.sampling) and (
        command in N_BEST_COMMANDS or name != "n_best")


CASES = [(cls, command, overrides, name, knob) for cls, commands, overrides in OPTION_FLAGS
         for command in commands for name, knob in knobs(cls) if offered(command, name, knob)]


@pytest.mark.parametrize(("cls", "command", "overrides", "name", "knob"), CASES,
                         ids=[f"{c[1]}-{c[3]}" for c in CASES])
def test_a_generated_flag_agrees_with_its_field(cls, command, overrides, name, knob) -> None:
    flag = action(command, knob.flag)
    default = {f.name: f.default for f in fields(cls)}[name]
    kind, choices = value_kind(cls, name)
    assert flag.dest == name
    assert knob.help in flag.help
    if kind is bool:
        assert flag.default is default and flag.const is (not default)  # store_true/_false
        return
    # sampling settings and n_best are given to SearchOptions.asked(): None when not given
    assert flag.default == (None if overrides or knob.sampling or name == "n_best" else default)
    assert (tuple(flag.choices) if flag.choices else None) == choices
    if choices is not None:
        return
    for bound, inside, open_ in ((knob.minimum, 1, knob.open_min),
                                 (knob.maximum, -1, knob.open_max)):
        if bound is None:
            continue
        step = 1 if kind is int else 1e-6 * max(1.0, abs(bound))
        assert rejects(flag.type, repr(bound - inside * step))
        assert rejects(flag.type, repr(kind(bound))) == open_
    assert rejects(flag.type, "nan") and rejects(flag.type, "inf")


@pytest.mark.parametrize(("cls", "command"), [(cls, command) for cls, commands, _ in
                                              OPTION_FLAGS for command in commands])
def test_no_flag_of_an_option_field_is_written_by_hand(cls, command) -> None:
    """Nor is a sampling flag offered where sampling is not."""
    declared = {knob.flag for _, knob in knobs(cls)}
    names = {f.name for f in fields(cls)}
    for flag, act in SUBPARSERS[command]._option_string_actions.items():
        if act.dest in names:
            assert offered(command, act.dest, dict(knobs(cls))[act.dest])
            assert flag in declared, f"padless {command} {flag} sets {cls.__name__}.{act.dest}"
