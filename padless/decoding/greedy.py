"""Greedy search and sampling: :func:`greedy_search`, :func:`sample_search`, and the one loop
behind both and behind ``padless serve``'s continuous batching, :class:`RowDecoder`, which
decodes one step at a time for a set of rows that may change.

Each :meth:`~RowDecoder.step` is one model call for every running row (sentence): the row's
next token is chosen among those :func:`~padless.decoding.search.restrict` allows, by the
scores of :func:`~padless.decoding.repetition.penalize_repetitions`, at the row's own step; a
row that ends (EOS, or ``max_length`` tokens) leaves at once with its answer, so a short
answer never waits for a long one. Rows given to :meth:`~RowDecoder.add` join at the next
step, and :meth:`~RowDecoder.drop` takes rows out (a client that went away): a running batch
changes at any step, which needs a model state with ``concat``
(:class:`padless.models.base.DecoderState`) once rows join rows already running.

A row's answer does not depend on the rows beside it: the same tokens as decoded alone,
scores equal up to float rounding (rows never see each other: masked attention).

A row may start with a given prefix (``prefixes``): its first tokens are the prefix's, fed
as the model's input, and the search goes on from there; the scores count only the tokens
the model chose (a prefix token adds nothing to ``log_prob`` or ``score``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch

from padless.decoding.options import SearchOptions
from padless.decoding.repetition import penalize_repetitions
from padless.decoding.search import (
    Hypothesis,
    SearchResult,
    StepModel,
    Stopped,
    filter_logits,
    restrict,
)
from padless.models.base import DecoderState

__all__ = ["RowDecoder", "greedy_search", "sample_search"]

Pick = Callable[[torch.Tensor], torch.Tensor]  # allowed scores [R, V] -> chosen ids [R]


@dataclass
class _Rows:
    """The running rows' bookkeeping, row ``r`` of every tensor being row ``r`` of the state."""

    tags: list[Hashable]
    src_lengths: list[int]
    prev: torch.Tensor  # [R] the last token fed
    tokens: torch.Tensor  # [R, max_length] the tokens so far, PAD after each row's own
    lengths: torch.Tensor  # [R] how many
    log_prob: torch.Tensor  # [R] float64: the model's log-probability of them
    score: torch.Tensor  # [R] float64: the same with the repetition penalty
    attention: list[list[torch.Tensor]] | None  # per row, per step: [S_r] (if asked)
    prefix: torch.Tensor  # [R, P] each row's given first tokens, PAD after them
    prefix_length: torch.Tensor  # [R] how many

    def take(self, keep: torch.Tensor, keep_list: list[int]) -> _Rows:
        return _Rows(
            [self.tags[r] for r in keep_list], [self.src_lengths[r] for r in keep_list],
            self.prev[keep], self.tokens[keep], self.lengths[keep], self.log_prob[keep],
            self.score[keep],
            None if self.attention is None else [self.attention[r] for r in keep_list],
            self.prefix[keep], self.prefix_length[keep])


class RowDecoder:
    """Greedy or sampling decoding of a changing set of rows (see the module docstring).

    Args:
        model: a :class:`padless.decoding.search.StepModel`, in eval mode.
        options: ``method`` greedy or sample, and their settings.
        generator: sampling's random numbers (a ``torch.Generator`` on the model's device).
        return_attention: keep each answer's ``[T, S]`` attention.
    """

    def __init__(self, model: object, options: SearchOptions, *,
                 generator: torch.Generator | None = None, return_attention: bool = False,
                 ) -> None:
        if options.method not in ("greedy", "sample"):
            raise ValueError(f"RowDecoder: greedy search or sampling, not {options.method}")
        self.model, self.options = model, options
        self.banned = options.banned_ids(model.specials)
        self.return_attention = return_attention
        self._pick = _greedy if options.method == "greedy" else _sampler(options, generator)
        self._state: DecoderState | None = None
        self._rows: _Rows | None = None

    def __len__(self) -> int:
        """Rows running."""
        return 0 if self._rows is None else len(self._rows.tags)

    @property
    def tags(self) -> list[Hashable]:
        """The running rows' tags, in row order."""
        return [] if self._rows is None else list(self._rows.tags)

    @torch.no_grad()
    def add(self, src: torch.Tensor, src_lengths: torch.Tensor, tags: Iterable[Hashable],
            prefixes: Sequence[Sequence[int]] | None = None) -> None:
        """Encode ``src [S, B]`` (lengths ``[B]``) now; its rows decode from the next step on,
        each from its prefix (``prefixes[b]``, ids; none by default), and each answer comes
        back with its tag (``tags[b]``)."""
        tags = list(tags)
        if len(tags) != src.shape[1]:
            raise ValueError(f"RowDecoder.add: {src.shape[1]} sources but {len(tags)} tags")
        state = self.model.start_decoding(src, src_lengths)
        device, batch, pad = src.device, src.shape[1], self.model.specials.pad
        prefixes = [[] for _ in tags] if prefixes is None else prefixes
        width = max(1, max(map(len, prefixes)))
        prefix = torch.tensor([list(p) + [pad] * (width - len(p)) for p in prefixes],
                              dtype=torch.long, device=device)
        rows = _Rows(
            tags, [int(n) for n in src_lengths],
            torch.full((batch,), self.model.specials.bos, dtype=torch.long, device=device),
            torch.full((batch, self.options.max_length), self.model.specials.pad, dtype=torch.long,
                       device=device),
            torch.zeros(batch, dtype=torch.long, device=device),
            torch.zeros(batch, dtype=torch.float64, device=device),
            torch.zeros(batch, dtype=torch.float64, device=device),
            [[] for _ in tags] if self.return_attention else None,
            prefix, torch.tensor([len(p) for p in prefixes], device=device))
        if self._rows is None:
            self._state, self._rows = state, rows
            return
        self._state = self._state.concat(state)
        old = self._rows
        self._rows = _Rows(
            old.tags + rows.tags, old.src_lengths + rows.src_lengths,
            torch.cat([old.prev, rows.prev]), torch.cat([old.tokens, rows.tokens]),
            torch.cat([old.lengths, rows.lengths]), torch.cat([old.log_prob, rows.log_prob]),
            torch.cat([old.score, rows.score]),
            None if old.attention is None else old.attention + rows.attention,
            _stacked(old.prefix, rows.prefix, pad),
            torch.cat([old.prefix_length, rows.prefix_length]))

    def partial(self) -> list[tuple[Hashable, list[int]]]:
        """Each running row's tag and its tokens so far (what streaming shows)."""
        if self._rows is None:
            return []
        rows = self._rows
        return [(tag, rows.tokens[r, : int(n)].tolist())
                for r, (tag, n) in enumerate(zip(rows.tags, rows.lengths, strict=True))]

    def drop(self, tags: Iterable[Hashable]) -> None:
        """Take the rows of ``tags`` out of the batch (their answers are never made)."""
        gone = set(tags)
        if self._rows is None or not gone.intersection(self._rows.tags):
            return
        self._keep([r for r, tag in enumerate(self._rows.tags) if tag not in gone])

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, Hypothesis]]:
        """One step for every running row; ``(tag, answer)`` of the rows that ended, which
        leave the batch."""
        if self._rows is None:
            return []
        rows, options = self._rows, self.options
        log_probs, self._state, attention = self.model.decode_step(rows.prev, self._state)
        width = int(rows.lengths.max())
        history = rows.tokens[:, :width]  # PAD after each row's own tokens: PAD is banned
        scores = penalize_repetitions(log_probs, history, options.repetition_penalty)
        # the restriction may work in place: only the chosen ids' values are read afterwards,
        # and a chosen id is never restricted
        allowed = restrict(
            scores,
            width,
            self.model.specials.eos,
            options.min_length,
            self.banned,
            history,
            options.no_repeat_ngram,
            rows.lengths,
            inplace=True,
        )
        token = self._pick(allowed)
        forced = rows.lengths < rows.prefix_length  # still in its prefix: not chosen
        if bool(forced.any()):
            at = rows.lengths.clamp(max=rows.prefix.shape[1] - 1).unsqueeze(1)
            token = torch.where(forced, rows.prefix.gather(1, at).squeeze(1), token)
        chosen = token.unsqueeze(1)
        nothing = torch.zeros((), dtype=torch.float64, device=token.device)
        rows.log_prob += torch.where(forced, nothing,
                                     log_probs.gather(1, chosen).squeeze(1).double())
        rows.score += torch.where(forced, nothing, scores.gather(1, chosen).squeeze(1).double())
        if rows.attention is not None:
            weights = attention.float().cpu()
            for r, steps in enumerate(rows.attention):
                steps.append(weights[r, : rows.src_lengths[r]])
        ended = (token == self.model.specials.eos) & ~forced
        going = (~ended).nonzero().squeeze(1)  # rows that left at max_length are gone
        rows.tokens[going, rows.lengths[going]] = token[going]
        rows.lengths[going] += 1
        rows.prev = token
        done = ended | (rows.lengths >= options.max_length)
        if not bool(done.any()):
            return []
        finished = [(rows.tags[r], self._answer(r, bool(ended[r])))
                    for r in done.nonzero().squeeze(1).tolist()]
        self._keep((~done).nonzero().squeeze(1).tolist())
        return finished

    def _answer(self, r: int, finished: bool) -> Hypothesis:
        rows = self._rows
        n = int(rows.lengths[r])
        attention = None if rows.attention is None else torch.stack(rows.attention[r])
        return Hypothesis(rows.tokens[r, :n].tolist(), float(rows.score[r]),
                          float(rows.log_prob[r]), finished, attention)

    def _keep(self, keep_list: list[int]) -> None:
        if not keep_list:
            self._state = self._rows = None
            return
        keep = torch.tensor(keep_list, dtype=torch.long, device=self._rows.prev.device)
        self._rows = self._rows.take(keep, keep_list)
        self._state = self._state.select(keep)


def _stacked(a: torch.Tensor, b: torch.Tensor, pad: int) -> torch.Tensor:
    """The rows of ``a [R, P]`` then those of ``b [R', P']``, padded to the wider."""
    width = max(a.shape[1], b.shape[1])
    return torch.cat([torch.nn.functional.pad(x, (0, width - x.shape[1]), value=pad)
                      for x in (a, b)])


def _greedy(allowed: torch.Tensor) -> torch.Tensor:
    """Each row's likeliest allowed id (the first of equal ones, as ``torch.argmax``)."""
    if allowed.device.type == "cpu" and allowed.dtype in (torch.float32, torch.float64):
        # numpy's argmax is vectorised, torch's CPU argmax (and max with indices) is not:
        # 64 x 14,420 scores took 69 us against 400-480 us (AMD EPYC, AVX-512), a tenth of
        # a Transformer step; NaN and all -inf rows give the same ids
        return torch.from_numpy(allowed.numpy().argmax(axis=1))
    return allowed.argmax(dim=1)


def _sampler(options: SearchOptions, generator: torch.Generator | None) -> Pick:
    """Ancestral sampling from ``softmax(scores / temperature)`` within top-k and top-p."""
    def pick(allowed: torch.Tensor) -> torch.Tensor:
        logits = filter_logits(allowed, options.temperature, options.top_k, options.top_p)
        return torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)

    return pick


@torch.no_grad()
def greedy_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions | None = None,
    *,
    return_attention: bool = False,
    stop: Callable[[], bool] | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> SearchResult:
    """Batched greedy decoding: the likeliest allowed token at each step; a sentence stops at
    EOS and leaves the batch, so the others decode alone.

    Args:
        model: a :class:`padless.decoding.search.StepModel` (in eval mode).
        src: ``[S, B]`` padded source ids, on the model's device.
        src_lengths: ``[B]`` source lengths.
        options: ``max_length``, ``min_length``, ``allow_unk`` and the repetition control
            (default ``SearchOptions()``: the commands' search); its method is not read.
        return_attention: keep each hypothesis' ``[T, S_b]`` attention.
        stop: asked before every step; True raises
            :class:`~padless.decoding.search.Stopped`.
        prefixes: each sentence's first tokens (ids), given (see the module docstring).
    """
    return _decode(model, src, src_lengths, _as(options, "greedy"), None, return_attention,
                   stop, prefixes)


@torch.no_grad()
def sample_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions | None = None,
    *,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
    stop: Callable[[], bool] | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> SearchResult:
    """Batched ancestral sampling from ``softmax(scores / temperature)`` (``scores``: the
    log-probabilities after the repetition penalty and bans) within ``top_k`` and ``top_p``.

    ``generator``: a ``torch.Generator`` on the model's device; the same seed and batch give
    the same samples. The score is the sample's (penalised) log-probability at temperature 1,
    unfiltered by top-k and top-p. Other arguments as :func:`greedy_search`.
    """
    return _decode(model, src, src_lengths, _as(options, "sample"), generator,
                   return_attention, stop, prefixes)


def _as(options: SearchOptions | None, method: str) -> SearchOptions:
    options = SearchOptions() if options is None else options
    return options if options.method == method else replace(options, method=method)


def _decode(model: StepModel, src: torch.Tensor, src_lengths: torch.Tensor,
            options: SearchOptions, generator: torch.Generator | None,
            return_attention: bool, stop: Callable[[], bool] | None,
            prefixes: Sequence[Sequence[int]] | None) -> SearchResult:
    decoder = RowDecoder(model, options, generator=generator, return_attention=return_attention)
    decoder.add(src, src_lengths, range(src.shape[1]), prefixes)
    answers: dict[int, Hypothesis] = {}
    while len(decoder):
        if stop is not None and stop():
            raise Stopped
        answers.update(decoder.step())
    return SearchResult([[answers[b]] for b in range(src.shape[1])])
