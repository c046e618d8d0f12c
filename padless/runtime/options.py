"""Every option of padless declared once: :func:`option` fields and the one validator.

An option type (``ModelConfig``, ``TrainConfig``, ``PrepareOptions``, ``SearchOptions``,
``ServeSettings``) is a dataclass whose fields are made by :func:`option`. Each field's
:class:`Knob` carries what a user sees of it: its help, its bounds or choices, its
command-line flag. Its type annotation says what values it takes (``int``, ``float``,
``bool``, ``str``, ``X | None``, ``Literal[...]``, ``tuple[float, float]``). From these:

- :func:`check_options` checks an instance, field by field (called by each type's
  ``__post_init__``, so a value is checked wherever it came from), and raises
  :class:`ConfigError` with the dotted key: ``train.lr: must be a finite number > 0, got 0``;
- :func:`options_from_dict` builds an instance from a nested mapping (YAML, ``--set``),
  refusing unknown keys with a "did you mean";
- :mod:`padless.commands.options` generates the commands' flags, :mod:`padless.serving.schemas`
  the HTTP request model, and :mod:`padless.commands.reference` the docs' option tables.

Rules between fields (``min_length <= max_length``) stay in the type's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from padless.runtime.errors import UserError

__all__ = ["ConfigError", "Knob", "check_options", "knobs", "option", "options_from_dict",
           "nullable", "shown", "value_kind"]


class ConfigError(UserError):
    """An option's key or value is wrong; the message starts with the dotted key."""


@dataclass(frozen=True)
class Knob:
    """What a user sees of one option.

    Attributes:
        help: the flag's help, the request field's description, the docs table's text.
        flag: the command-line option (``--max-length``; a boolean whose default is True
            takes ``--no-NAME``); None: set only in a config or in Python.
        metavar: its value's name in the help (default ``N`` for numbers).
        minimum, maximum: bounds of a number (None: none); ``open_min`` / ``open_max``
            exclude them.
        choices: the strings it may be, where the annotation is ``str`` (the annotation's
            ``Literal`` otherwise says them).
        request: a client may set it per HTTP request (search options).
        sampling: it applies to sampling only (given with another method, an error).
    """

    help: str
    flag: str | None = None
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    choices: tuple[str, ...] | None = None
    request: bool = False
    sampling: bool = False

    def rule(self, kind: type = float) -> str:
        """The bounds in words: ``an integer >= 1``, ``a finite number > 0 and <= 100``."""
        parts = ["an integer" if kind is int else "a finite number"]
        if self.minimum is not None:
            parts.append(f"{'>' if self.open_min else '>='} {_figure(self.minimum)}")
        if self.maximum is not None:
            parts.append(f"{'and ' if self.minimum is not None else ''}"
                         f"{'<' if self.open_max else '<='} {_figure(self.maximum)}")
        return " ".join(parts)

    def holds(self, value: float) -> bool:
        """Whether the number ``value`` is within the bounds (NaN and infinity never are)."""
        if isinstance(value, float) and not math.isfinite(value):  # an int has no NaN
            return False
        low = self.minimum is None or (value > self.minimum if self.open_min
                                       else value >= self.minimum)
        high = self.maximum is None or (value < self.maximum if self.open_max
                                        else value <= self.maximum)
        return low and high


def _figure(bound: float) -> str:
    """A bound as people write it: ``2147483647``, ``0.5``, ``1e-06``."""
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e16 else f"{bound:g}"


def option(default: Any, help: str, **knob: Any) -> Any:  # noqa: A002 (the Knob's word)
    """A dataclass field with ``default`` and a :class:`Knob` (``help`` and ``knob``'s
    keywords: ``flag``, ``minimum``, ``choices``, ...)."""
    return field(default=default, metadata={"knob": Knob(help, **knob)})


def knobs(cls: type) -> list[tuple[str, Knob]]:
    """``(field name, Knob)`` of every option of the dataclass ``cls``, in field order."""
    return [(f.name, f.metadata["knob"]) for f in dataclasses.fields(cls)
            if "knob" in f.metadata]


def value_kind(cls: type, name: str) -> tuple[type, tuple[str, ...] | None]:
    """What the field ``name`` of ``cls`` holds, for a flag or a request field: ``int``,
    ``float``, ``bool`` or ``str`` (its ``None`` alternative left out), and the strings it
    may be (a ``Literal``'s or the knob's ``choices``; None: any)."""
    hint = _hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is Literal:
        return str, tuple(typing.get_args(hint))
    knob = dict(knobs(cls)).get(name)
    return hint, None if knob is None else knob.choices


def nullable(cls: type, name: str) -> bool:
    """Whether the field ``name`` of ``cls`` may be None (``null`` in a config)."""
    return type(None) in typing.get_args(_hints(cls)[name])


def shown(value: object) -> str:
    """``repr(value)``, cut short: a 10 MB ``--set`` value would make a 10 MB message."""
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxstring = short.maxother = 60
    short.maxlist = short.maxdict = 6
    short.maxlevel = 3
    return short.repr(value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_options(instance: Any, section: str) -> None:
    """Check every field of the option dataclass ``instance`` against its annotation and
    knob, converting where the value clearly is what was meant (an integer for a float,
    YAML's ``"1e-4"``); the error's key is ``section.field``.

    Raises:
        ConfigError: ``KEY: expected ..., got VALUE`` (a wrong type) or ``KEY: must be
            RULE, got VALUE`` (out of bounds or choices), for the first bad field.
    """
    hints = _hints(type(instance))
    for f in dataclasses.fields(instance):
        if not f.init:
            continue
        key = f"{section}.{f.name}" if section else f.name
        value = _convert(hints[f.name], getattr(instance, f.name), key)
        knob = f.metadata.get("knob")
        if knob is not None:
            _check_knob(knob, value, key)
        object.__setattr__(instance, f.name, value)  # frozen dataclasses too


def _check_knob(knob: Knob, value: Any, key: str) -> None:
    if isinstance(value, tuple):  # each member within the bounds
        for i, member in enumerate(value):
            _check_knob(knob, member, f"{key}[{i}]")
        return
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float) and not knob.holds(value):
        raise ConfigError(f"{key}: must be {knob.rule(type(value))}, got {shown(value)}")
    if isinstance(value, str) and knob.choices is not None and value not in knob.choices:
        raise ConfigError(f"{key}: must be one of {', '.join(knob.choices)}; got {shown(value)}")


def options_from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a (partial) nested mapping; missing keys keep their
    defaults, nested dataclass fields are built from their own mappings.

    Raises:
        ConfigError: naming the first unknown key (with the closest known one) or bad value.
    """
    where = prefix.rstrip(".") or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {shown(data)}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(f"{prefix}{key}: unknown key (valid keys: {', '.join(known)}){hint}")
    hints = _hints(cls)
    return cls(**{key: _convert(hints[key], value, f"{prefix}{key}")
                  for key, value in data.items()})


def _convert(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` of ``key``; return it converted."""
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else options_from_dict(hint, value, key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for alternative in (a for a in args if a is not type(None)):
            try:
                return _convert(alternative, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: bad value {shown(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, args))}; got "
                              f"{shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {shown(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]")
                     for i, (a, v) in enumerate(zip(args, value, strict=True)))
    return _convert_plain(hint, value, key)


def _convert_plain(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {shown(value)}")
        if not math.isfinite(value):  # YAML's .inf and .nan, or "inf" and "nan"
            raise ConfigError(f"{key}: expected a finite number, got {shown(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {shown(value)}")
        return value
    raise TypeError(f"{key}: unsupported option type {hint!r}")  # a bug in the dataclass
