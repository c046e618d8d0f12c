"""How to decode: :class:`SearchOptions`, the one type that goes from the command line and the
HTTP request to the search functions.

Each field's user-facing description (its help, its command-line flag, its bounds, whether a
request may set it) is declared once, in the field's
:class:`~padless.runtime.options.Knob`; the commands' flags
(:mod:`padless.commands.options`) and the HTTP request model (:mod:`padless.serving.schemas`)
are generated from them, and :meth:`SearchOptions.__post_init__` checks every value against
the same bounds: a bad value is refused in one place, whoever asked for it.

``beam`` and ``sample`` choose the method, on the command line (``--beam K``, ``--sample``)
and in a request (``"beam": K``, ``"sample": true``) alike: :meth:`SearchOptions.asked` is the
one mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from padless.data.vocabulary import Specials
from padless.runtime.errors import UserError
from padless.runtime.options import ConfigError, check_options, knobs, option

__all__ = ["MAX_BATCH_SIZE", "MAX_BEAMS", "MAX_TOKENS", "METHODS", "SearchOptions"]

METHODS = ("greedy", "beam", "sample")
# An answer's longest: every running row holds a buffer this long, and a longer answer is
# no answer (the bound keeps --max-length 99999999 from allocating gigabytes a row).
MAX_TOKENS = 4096
MAX_BEAMS = 1024  # beams (and n-best answers): each is a row of every buffer
# The most sentences --batch-size decodes at once (buffers are sized by the sentences
# decoded, so only a typo's 10**11 needs refusing).
MAX_BATCH_SIZE = 65_536


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

    method: str = option("greedy", "the search", choices=METHODS)
    max_length: int = option(30, "at most N output tokens", flag="--max-length", minimum=1,
                             maximum=MAX_TOKENS)
    min_length: int = option(1, "at least N output tokens before the end (1: never an empty "
                             "answer)", flag="--min-length", minimum=0, maximum=MAX_TOKENS)
    beam_size: int = option(5, "beams of beam search", minimum=1, maximum=MAX_BEAMS)
    alpha: float = option(0.6, "beam search's GNMT length penalty exponent (0: none)",
                          flag="--length-penalty", metavar="ALPHA", minimum=0)
    n_best: int = option(1, "hypotheses returned per input, best first (beam search, with at "
                         "least as many beams)", flag="--n-best", metavar="K", minimum=1,
                         maximum=MAX_BEAMS, request=True)
    temperature: float = option(1.0, "sampling temperature", flag="--temperature", metavar="T",
                                minimum=0, open_min=True, maximum=100, request=True,
                                sampling=True)
    top_k: int = option(0, "sample among the K likeliest tokens (0: all)", flag="--top-k",
                        metavar="K", minimum=0, request=True, sampling=True)
    top_p: float = option(1.0, "nucleus sampling: the smallest set of tokens with "
                          "probability P", flag="--top-p", metavar="P", minimum=0,
                          open_min=True, maximum=1, request=True, sampling=True)
    allow_unk: bool = option(False, "let answers contain <unk> (by default it is never "
                             "generated)", flag="--allow-unk")
    no_repeat_ngram: int = option(3, "never the same N-gram twice in an answer (0: allowed)",
                                  flag="--no-repeat-ngram", minimum=0)
    repetition_penalty: float = option(1.5, "multiply the log-probability of words already in "
                                       "the answer by P >= 1 (1: no penalty)",
                                       flag="--repetition-penalty", metavar="P", minimum=1)

    def __post_init__(self) -> None:
        check_options(self, "search")
        if self.min_length > self.max_length:
            raise ConfigError(f"search.min_length: must be at most max_length "
                              f"({self.max_length}), got {self.min_length}")
        if self.n_best > 1 and self.method != "beam":
            raise ConfigError(f"search.n_best: {self.n_best} hypotheses need beam search with "
                              f"at least {self.n_best} beams (--beam {self.n_best}), not "
                              f"{self.method}")
        if self.n_best > self.beam_size:
            raise ConfigError(f"search.n_best: must be at most beam_size ({self.beam_size}), "
                              f"got {self.n_best}")

    @classmethod
    def plain(cls, method: str = "greedy", **settings: Any) -> SearchOptions:
        """The model's own search: no minimum length, no repetition control, ``<unk>``
        allowed (PAD and BOS are still never chosen: they are not outputs)."""
        base = {"min_length": 0, "no_repeat_ngram": 0, "repetition_penalty": 1.0,
                "allow_unk": True}
        return cls(method, **{**base, **settings})

    def banned_ids(self, specials: Specials) -> tuple[int, ...]:
        """Ids an answer never holds: PAD and the decoder's start (never outputs, though an
        untrained model may prefer them), and UNK unless ``allow_unk``."""
        never = specials.never_output()
        return never if self.allow_unk else tuple(sorted({*never, specials.unk}))

    def asked(
        self,
        *,
        beam: int | None = None,
        sample: bool = False,
        max_beam: int | None = None,
        n_best: int | None = None,
        **sampling: float | int | None,
    ) -> SearchOptions:
        """These options with the search someone asked for: ``beam`` K (1: greedy) or
        ``sample`` with ``temperature``/``top_k``/``top_p`` (None: these options' own);
        neither keeps these options' method; ``n_best`` hypotheses (None: these options'
        own). What ``--beam``/``--sample``/``--n-best`` and a request's ``beam``/``sample``/
        ``n_best`` mean, in one place.

        Raises:
            UserError: beam and sample together, a sampling setting without ``sample``, a
                beam above ``max_beam``, or a bad value.
        """
        given = sorted(name for name, value in sampling.items() if value is not None)
        unknown = [name for name in given if not dict(knobs(SearchOptions))[name].sampling]
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
        n_best = self.n_best if n_best is None else n_best
        if sample:
            return replace(self, method="sample", n_best=n_best,
                           **{name: sampling[name] for name in given})
        if beam == 1:
            return replace(self, method="greedy", n_best=n_best)
        if beam is not None:
            return replace(self, method="beam", beam_size=beam, n_best=n_best)
        return self if n_best == self.n_best else replace(self, n_best=n_best)
