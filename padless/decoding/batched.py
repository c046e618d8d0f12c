"""Decoding many sentences: length-sorted batches, results in input order, text in and out.

What ``padless chat``, ``translate``, ``evaluate`` and ``quickstart`` decode with; the searches
themselves are in :mod:`padless.decoding.greedy` (greedy and sampling) and
:mod:`padless.decoding.beam`, on the rules they share in :mod:`padless.decoding.search`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from padless.data.text import TextProcessor
from padless.decoding.beam import beam_search
from padless.decoding.greedy import RowDecoder, greedy_search, sample_search
from padless.decoding.options import SearchOptions
from padless.decoding.search import Hypothesis, SearchResult
from padless.masking import pad_batch
from padless.models import EncoderDecoder
from padless.runtime.errors import UserError

__all__ = [
    "MAX_SEED", "InputsTruncated", "Reply", "cap_sources", "decode_ids", "decode_lines",
    "decode_texts", "make_generator", "prefix_ids", "reply", "run_search",
]


class InputsTruncated(UserWarning):
    """Some inputs were longer than the cap and were cut (the message says how many)."""


# the largest sampling seed: 2**53 - 1, an integer every JSON parser holds exactly (a
# JavaScript client's numbers are doubles)
MAX_SEED = 2**53 - 1


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A sampling generator on ``device``: seeded (``0 <= seed <= MAX_SEED``), or freshly
    seeded when ``seed`` is None."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def run_search(
    model: EncoderDecoder,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions,
    *,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
    stop: Callable[[], bool] | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> SearchResult:
    """Run the search ``options.method`` names on ``src [S, B]``, ``src_lengths [B]``
    (``stop``: asked before every step, True raises
    :class:`~padless.decoding.search.Stopped`; ``prefixes``: each sentence's given first
    tokens)."""
    common = {"return_attention": return_attention, "stop": stop, "prefixes": prefixes}
    if options.method == "beam":
        return beam_search(model, src, src_lengths, options, **common)
    if options.method == "sample":
        return sample_search(model, src, src_lengths, options, generator=generator, **common)
    return greedy_search(model, src, src_lengths, options, **common)


def decode_ids(
    model: EncoderDecoder,
    sources: Sequence[Sequence[int]],
    options: SearchOptions,
    *,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = False,
    return_attention: bool = False,
    stop: Callable[[], bool] | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Decode ``sources`` (id lists) in batches; ``result[i]`` is source ``i``'s n-best list,
    each answer starting with ``prefixes[i]`` if given.

    Sources are sorted by length so that each batch holds similar lengths (little padding
    and few steps spent on finished sentences). An empty source gets one empty hypothesis:
    there is nothing to encode. ``progress`` shows a tqdm bar (sentences) on stderr.
    ``stop``: asked before every decoding step; True raises
    :class:`~padless.decoding.search.Stopped`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = model.device
    results = [[Hypothesis([], 0.0, 0.0, False)] for _ in sources]  # kept for empty sources
    order = sorted((i for i, s in enumerate(sources) if len(s)), key=lambda i: len(sources[i]))
    with tqdm(total=len(order), unit="sent", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            src, lengths = pad_batch([sources[i] for i in indices], model.specials.pad)
            result = run_search(
                model, src.to(device), lengths, options, generator=generator,
                return_attention=return_attention, stop=stop,
                prefixes=None if prefixes is None else [prefixes[i] for i in indices],
            )
            for i, nbest in zip(indices, result.hypotheses, strict=True):
                results[i] = nbest
            bar.update(len(indices))
    return results


def cap_sources(
    sources: Sequence[Sequence[int]], max_input_length: int | None
) -> tuple[list[Sequence[int]], int]:
    """``sources`` with each cut to its first ``max_input_length`` ids, and how many were cut.

    Decoding time and memory grow with the source length; a model has seen sources no
    longer than its data's ``max_length``. None: no cap.
    """
    if max_input_length is None:
        return list(sources), 0
    if max_input_length < 1:
        raise ValueError(f"max_input_length must be at least 1, got {max_input_length}")
    capped = [s[:max_input_length] if len(s) > max_input_length else s for s in sources]
    return capped, sum(len(s) > max_input_length for s in sources)


def prefix_ids(text: TextProcessor, prefix: str, max_length: int, where: str) -> list[int]:
    """The ids an answer must start with, as the run's text pipeline encodes a target.

    Raises:
        UserError: ``where``: the prefix holds a word outside the vocabulary (it could never
            be decoded back), or more tokens than ``max_length``.
    """
    ids = text.encode_target(prefix)
    if text.vocab.specials.unk in ids:
        words = text.tokenize(prefix) if text.tokenizer.name != "pretrained" else []
        word = next((w for w, i in zip(words, ids, strict=False)
                     if i == text.vocab.specials.unk), None)
        raise UserError(f"{where}: the prefix holds a word outside the model's vocabulary"
                        + (f" ({word!r})" if word is not None else ""))
    if len(ids) > max_length:
        raise UserError(f"{where}: the prefix is {len(ids)} tokens, more than the answer's "
                        f"--max-length of {max_length}")
    return ids


def decode_lines(
    model: EncoderDecoder,
    text: TextProcessor,
    lines: Sequence[str],
    options: SearchOptions,
    *,
    batch_size: int = 64,
    max_input_length: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    prefixes: Sequence[str] | None = None,
) -> list[list[tuple[str, Hypothesis]]]:
    """Each line's ``options.n_best`` answers, best first, as ``(text, hypothesis)``, in
    input order (see :func:`decode_ids`; an empty line gets one empty answer), each
    starting with its line's prefix (``prefixes``, texts) if given.

    Lines longer than ``max_input_length`` tokens are cut to their first ``max_input_length``
    (see :func:`cap_sources`), with an :class:`InputsTruncated` warning saying how many.

    Raises:
        UserError: a bad prefix (:func:`prefix_ids`), or not one per line.
    """
    forced = None
    if prefixes is not None:
        if len(prefixes) != len(lines):
            raise UserError(f"{len(prefixes)} prefixes for {len(lines)} inputs: give one per "
                            "input (an empty one for none)")
        forced = [prefix_ids(text, p, options.max_length, f"prefix {i}")
                  for i, p in enumerate(prefixes, 1)]
    sources, n_cut = cap_sources([text.encode(line) for line in lines], max_input_length)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(lines)} inputs were longer than {max_input_length} "
                      f"tokens and were cut to their first {max_input_length}",
                      InputsTruncated, stacklevel=3)
    nbests = decode_ids(model, sources, options, batch_size=batch_size, generator=generator,
                        progress=progress, prefixes=forced)
    return [[(text.decode(hyp.tokens), hyp) for hyp in nbest] for nbest in nbests]


def decode_texts(model: EncoderDecoder, text: TextProcessor, lines: Sequence[str],
                 options: SearchOptions, **settings: object) -> list[str]:
    """The best answer to each line, detokenised, in input order (:func:`decode_lines`)."""
    return [answers[0][0] for answers in decode_lines(model, text, lines, options, **settings)]


@dataclass(frozen=True)
class Reply:
    """The answer to one input line.

    Attributes:
        text: the detokenised answer; None when the input has no token at all.
        hypothesis: the best hypothesis (tokens, score, attention if asked); None with ``text``.
        source_ids: the input's token ids as decoded (after any truncation).
        notice: a message for the user (nothing to answer, input truncated), or None.
    """

    text: str | None
    hypothesis: Hypothesis | None
    source_ids: list[int]
    notice: str | None = None


def reply(
    model: EncoderDecoder,
    text: TextProcessor,
    line: str,
    options: SearchOptions,
    *,
    max_input_length: int = 50,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
    on_text: Callable[[str], object] | None = None,
) -> Reply:
    """The model's answer to ``line``: normalised and tokenised as in training, UNK for
    unknown words, cut to ``max_input_length`` tokens (with a notice). ``on_text`` (greedy
    search and sampling) is called with the answer so far after every decoding step, for a
    reader who watches it come."""
    ids = text.encode(line)
    if not ids:
        return Reply(None, None, [], "(nothing to answer: say something)")
    notice = None
    (capped,), n_cut = cap_sources([ids], max_input_length)
    if n_cut:
        notice = f"(input truncated to its first {max_input_length} of {len(ids)} tokens)"
        ids = list(capped)
    if on_text is not None and options.method != "beam":
        src, lengths = pad_batch([ids], model.specials.pad)
        decoder = RowDecoder(model, options, generator=generator,
                             return_attention=return_attention)
        decoder.add(src.to(model.device), lengths, [0])
        finished: list = []
        while len(decoder):
            finished += decoder.step()
            for _, tokens in decoder.partial():
                on_text(text.decode(tokens))
        ((_, best),) = finished
    else:
        ((best, *_),) = decode_ids(model, [ids], options, generator=generator,
                                   return_attention=return_attention)
    return Reply(text.decode(best.tokens), best, ids, notice)
