"""What commands take from the user: numeric option values, checked, and stdin lines, decoded.

Every numeric option of every command has one of these argparse types, so a value out of
range, ``nan`` or ``inf`` stops the command before any work, with the option's name::

    padless evaluate: error: argument --limit: must be an integer >= 1, got '0'

:func:`stdin_lines` reads the lines ``chat`` and ``translate`` answer: UTF-8 whatever the
locale says, a bad byte reported with its line number.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO

from padless.runtime.errors import UserError
from padless.runtime.options import Knob

__all__ = ["integer", "number", "read_lines", "stdin_lines"]


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[minimum, maximum]`` (either bound may be None)."""
    bounds = Knob("", minimum=minimum, maximum=maximum)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {bounds.rule(int)}, got {text!r}") from None
        if not bounds.holds(value):
            raise argparse.ArgumentTypeError(f"must be {bounds.rule(int)}, got {text!r}")
        return value

    return parse


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_min: bool = False,
    open_max: bool = False,
) -> Callable[[str], float]:
    """An argparse type: a finite number within the bounds (``open_*``: the bound excluded)."""
    bounds = Knob("", minimum=minimum, maximum=maximum, open_min=open_min, open_max=open_max)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not bounds.holds(value):
            raise argparse.ArgumentTypeError(f"must be {bounds.rule(float)}, got {text!r}")
        return value

    return parse


def read_lines(path: str) -> list[str]:
    """The lines of the UTF-8 text file ``path``, without their line ends.

    Raises:
        UserError: ``FILE:LINE`` at a line that is not UTF-8; OSError (named by the command)
            for a missing or unreadable file.
    """
    with open(path, "rb") as f:
        return list(_decoded_lines(f, path))


def stdin_lines() -> Iterator[str]:
    """The lines of stdin without their line ends, decoded as UTF-8 as they are read.

    Raises:
        UserError: at once if stdin is closed; while reading, at a line that is not UTF-8
            (naming the line and the byte).
    """
    if sys.stdin is None:  # started with stdin closed (`<&-`)
        raise UserError("stdin is closed: give the input lines on stdin")
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes underneath (tests, embedding)
        return (line.rstrip("\r\n") for line in sys.stdin)
    return _decoded_lines(stream, "stdin")


def _decoded_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    for lineno, raw in enumerate(stream, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{name}:{lineno}: not valid UTF-8 (byte {e.start + 1}: {e.reason}); "
                            "convert the input to UTF-8, e.g. with iconv") from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        yield line.rstrip("\r\n")
