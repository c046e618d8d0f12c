"""How to decode: :class:`SearchOptions`, the one type that goes from the command line and the
HTTP request to the search functions.

Each field's user-facing description (its help, its command-line flag, its bounds, whether a
request may set it) is declared once, in the field's :class:`Knob`; the commands' flags
(:mod:`padless.commands.options`) and the HTTP request model (:mod:`padless.serving.schemas`)
are generated from them, and :meth:`SearchOptions.__post_init__` checks every value against
the same bounds: a bad value is refused in one place, whoever asked for it.

``beam`` and ``sample`` choose the method, on the command line (``--beam K``, ``--sample``)
and in a request (``"beam": K``, ``"sample": true``) alike: :meth:`SearchOptions.asked` is the
one mapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from padless.data.vocabulary import BOS_ID, PAD_ID, UNK_ID
from padless.runtime.errors import UserError

__all__ = ["METHODS", "Knob", "SearchOptions", "knobs"]

METHODS = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class Knob:
    """What a user sees of one search option.

    Attributes:
        help: the flag's help and the request field's description.
        flag: the command-line option (``--max-length``); None: not one.
        metavar: its value's name in the help.
        minimum, maximum: bounds (None: none); ``open_min`` / ``open_max`` exclude them.
        request: a client may set it per request (HTTP); the others are the server's.
        sampling: it applies to sampling only (given with another method, it is an error).
    """

    help: str
    flag: str | None = None
    metavar: str = "N"
    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    request: bool = False
    sampling: bool = False

    def rule(self, kind: type) -> str:
        """The bounds in words: ``an integer >= 1``, ``a finite number > 0 and <= 100``."""
        parts = ["an integer" if kind is int else "a finite number"]
        if self.minimum is not None:
            parts.append(f"{'>' if self.open_min else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"{'and ' if self.minimum is not None else ''}"
                         f"{'<' if self.open_max else '<='} {self.maximum:g}")
        return " ".join(parts)

    def holds(self, value: float) -> bool:
        """Whether ``value`` is within the bounds (NaN never is)."""
        if value != value or (isinstance(value, float) and math.isinf(value)):
            return False
        low = self.minimum is None or (value > self.minimum if self.open_min
                                       else value >= self.minimum)
        high = self.maximum is None or (value < self.maximum if self.open_max
                                        else value <= self.maximum)
        return low and high


def _option(default: Any, knob: Knob) -> Any:
    return field(default=default, metadata={"knob": knob})


@dataclass(frozen=True)
class SearchOptions:
    """How to decode; ``method`` picks the search, the other fields are its settings.

    The defaults are what the commands do: never an empty answer, never ``<unk>`` in it, no
    3-gram twice in one answer and a penalty on repeated words (greedy and beam search on a
    chit-chat model otherwise loop: "i like the the time i have to a good to the here"; with
    1.2 a barely trained model still said "i have you you you a be?", with 1.5 "i have you a
    be?"). :meth:`plain` is the model's own search, with no restriction.

    Raises:
        UserError: ``bad search option NAME=VALUE: must be RULE``, for any value (the first).
    """

    method: str = "greedy"
    max_length: int = _option(30, Knob("at most N output tokens", "--max-length", minimum=1))
    min_length: int = _option(1, Knob("at least N output tokens before the end (1: never an "
                                      "empty answer)", "--min-length", minimum=0))
    beam_size: int = _option(5, Knob("beams of beam search", minimum=1))
    alpha: float = _option(0.6, Knob("beam search's GNMT length penalty exponent (0: none)",
                                     "--length-penalty", "ALPHA", minimum=0))
    n_best: int = _option(1, Knob("hypotheses beam search returns per input", minimum=1))
    temperature: float = _option(1.0, Knob(
        "sampling temperature", "--temperature", "T", minimum=0, open_min=True, maximum=100,
        request=True, sampling=True))
    top_k: int = _option(0, Knob("sample among the K likeliest tokens (0: all)", "--top-k",
                                 "K", minimum=0, request=True, sampling=True))
    top_p: float = _option(1.0, Knob(
        "nucleus sampling: the smallest set of tokens with probability P", "--top-p", "P",
        minimum=0, open_min=True, maximum=1, request=True, sampling=True))
    allow_unk: bool = _option(False, Knob("let answers contain <unk> (by default it is never "
                                          "generated)", "--allow-unk"))
    no_repeat_ngram: int = _option(3, Knob("never the same N-gram twice in an answer (0: "
                                           "allowed)", "--no-repeat-ngram", minimum=0))
    repetition_penalty: float = _option(1.5, Knob(
        "multiply the log-probability of words already in the answer by P >= 1 (1: no "
        "penalty)", "--repetition-penalty", "P", minimum=1))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"bad search option method={self.method!r}: must be greedy, beam "
                            "or sample")
        for f, knob in knobs():
            value = getattr(self, f)
            kind = _KINDS[f]
            if kind is bool:
                if not isinstance(value, bool):
                    raise UserError(f"bad search option {f}={value!r}: must be true or false")
                continue
            ok = (not isinstance(value, bool) and isinstance(value, kind | int)
                  and knob.holds(value))
            if not ok:
                raise UserError(f"bad search option {f}={value!r}: must be {knob.rule(kind)}")
        if self.min_length > self.max_length:
            raise UserError(f"bad search option min_length={self.min_length}: must be at most "
                            f"max_length ({self.max_length})")
        if self.n_best > self.beam_size:
            raise UserError(f"bad search option n_best={self.n_best}: must be at most "
                            f"beam_size ({self.beam_size})")

    @classmethod
    def plain(cls, method: str = "greedy", **settings: Any) -> SearchOptions:
        """The model's own search: no minimum length, no repetition control, ``<unk>``
        allowed (PAD and BOS are still never chosen: they are not outputs)."""
        base = {"min_length": 0, "no_repeat_ngram": 0, "repetition_penalty": 1.0,
                "allow_unk": True}
        return cls(method, **{**base, **settings})

    def banned_ids(self) -> tuple[int, ...]:
        """Ids an answer never holds: PAD and BOS (never outputs, though an untrained model
        may prefer them), and UNK unless ``allow_unk``."""
        return (PAD_ID, BOS_ID) if self.allow_unk else (PAD_ID, BOS_ID, UNK_ID)

    def asked(
        self,
        *,
        beam: int | None = None,
        sample: bool = False,
        max_beam: int | None = None,
        **sampling: float | int | None,
    ) -> SearchOptions:
        """These options with the search someone asked for: ``beam`` K (1: greedy) or
        ``sample`` with ``temperature``/``top_k``/``top_p`` (None: these options' own);
        neither keeps these options' method. What ``--beam``/``--sample`` and a request's
        ``beam``/``sample`` mean, in one place.

        Raises:
            UserError: beam and sample together, a sampling setting without ``sample``, a
                beam above ``max_beam``, or a bad value.
        """
        given = sorted(name for name, value in sampling.items() if value is not None)
        unknown = [name for name in given if not dict(knobs())[name].sampling]
        if unknown:
            raise TypeError(f"asked: {unknown[0]} is not a sampling setting")
        if sample and beam is not None:
            raise UserError("beam and sample exclude each other: ask for one")
        if given and not sample:
            verb = "apply" if len(given) > 1 else "applies"
            raise UserError(f"{', '.join(given)} {verb} to sampling only: ask for sampling "
                            '(--sample, or "sample": true)')
        if beam is not None and max_beam is not None and beam > max_beam:
            raise UserError(f"beam: {beam} beams; this server allows at most {max_beam}")
        if sample:
            return replace(self, method="sample",
                           **{name: sampling[name] for name in given})
        if beam == 1:
            return replace(self, method="greedy")
        if beam is not None:
            return replace(self, method="beam", beam_size=beam)
        return self


def knobs() -> list[tuple[str, Knob]]:
    """``(field name, Knob)`` of every setting of :class:`SearchOptions`, in field order."""
    return [(f.name, f.metadata["knob"]) for f in fields(SearchOptions) if "knob" in f.metadata]


_KINDS = {f.name: {"int": int, "float": float, "bool": bool}.get(f.type, str)
          for f in fields(SearchOptions)}
