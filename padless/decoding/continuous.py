"""Greedy search with continuous batching: sentences join and leave a running batch at any step.

:func:`padless.decoding.search.greedy_search` decodes a fixed batch until its longest answer
ends, so a one-word answer waits for a thirty-word one. A server facing a stream of requests
does better with :class:`ContinuousGreedy`: each :meth:`~ContinuousGreedy.step` is one model
call for every running sentence; a sentence that ends leaves at once with its answer, and
sentences given to :meth:`~ContinuousGreedy.add` join at the next step.

Each sentence gets the answer greedy search gives it alone: the same tokens, the same score up
to float rounding, the same restrictions and repetition control
(:func:`~padless.decoding.search.restrict` and
:func:`~padless.decoding.search.penalize_repetitions` at the sentence's own step) and the
same attention. It needs a model whose decoding state has
``concat`` (see :class:`padless.models.base.DecoderState`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, fields

import torch

from padless.data.vocabulary import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from padless.decoding.batched import banned_ids
from padless.decoding.repetition import penalize_repetitions
from padless.decoding.search import Hypothesis, SearchOptions, restrict
from padless.masking import pad_batch
from padless.models import EncoderDecoder

__all__ = ["ContinuousGreedy", "can_concat"]

# the fields of SearchOptions this engine implements; any other field must be at its default,
# and those of the other methods do not matter
HANDLED = {"method", "max_length", "min_length", "allow_unk", "no_repeat_ngram",
           "repetition_penalty"}
OTHER_METHODS = {"beam_size", "alpha", "n_best", "temperature", "top_k", "top_p"}


def can_concat(model: EncoderDecoder) -> bool:
    """Whether ``model``'s decoding state can take rows from another (``concat``)."""
    with torch.no_grad():
        state = model.start_decoding(torch.full((1, 1), UNK_ID, device=model.device),
                                     torch.ones(1, dtype=torch.long))
    return callable(getattr(state, "concat", None))


@dataclass
class _Row:
    """One running sentence."""

    tag: Hashable
    src_length: int
    tokens: list[int] = field(default_factory=list)
    log_prob: float = 0.0
    score: float = 0.0  # the log-probability with the repetition penalty
    attention: list[torch.Tensor] = field(default_factory=list)


class ContinuousGreedy:
    """Greedy decoding of a changing set of sentences (see the module docstring).

    Args:
        model: in eval mode, with a state that has ``concat`` (:func:`can_concat`).
        options: a greedy search that :meth:`supports` accepts.
    """

    def __init__(self, model: EncoderDecoder, options: SearchOptions) -> None:
        if not self.supports(options):
            raise ValueError(f"ContinuousGreedy: plain greedy search only, got {options}")
        self.model = model
        self.options = options
        self.banned = banned_ids(options)
        self._rows: list[_Row] = []
        self._state = None
        self._prev: torch.Tensor | None = None  # [R] the last token of each row

    @staticmethod
    def supports(options: SearchOptions) -> bool:
        """True for greedy search with nothing this engine does not implement."""
        default = SearchOptions()
        return options.method == "greedy" and all(
            getattr(options, f.name) == getattr(default, f.name)
            for f in fields(SearchOptions) if f.name not in HANDLED | OTHER_METHODS)

    def __len__(self) -> int:
        """Sentences running."""
        return len(self._rows)

    @torch.no_grad()
    def add(self, sources: Sequence[Sequence[int]], tags: Sequence[Hashable]) -> None:
        """Encode ``sources`` (non-empty id lists) now; they decode from the next step on.
        ``tags[i]`` comes back with source ``i``'s answer."""
        if any(len(source) == 0 for source in sources):
            raise ValueError("ContinuousGreedy.add: an empty source has nothing to encode")
        device = self.model.device
        src, lengths = pad_batch([list(s) for s in sources], PAD_ID)
        state = self.model.start_decoding(src.to(device), lengths)
        bos = torch.full((len(sources),), BOS_ID, dtype=torch.long, device=device)
        if self._state is None:
            self._state, self._prev = state, bos
        else:
            self._state, self._prev = self._state.concat(state), torch.cat([self._prev, bos])
        self._rows += [_Row(tag, len(s)) for tag, s in zip(tags, sources, strict=True)]

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, Hypothesis]]:
        """One decoding step for every running sentence; returns ``(tag, answer)`` of those
        that ended (EOS, or ``max_length`` tokens) and drops them from the batch."""
        if not self._rows:
            return []
        options = self.options
        log_probs, state, attention = self.model.decode_step(self._prev, self._state)
        # each row's tokens so far, left-aligned: rows are at different steps
        history, lengths = pad_batch([row.tokens for row in self._rows], PAD_ID,
                                     batch_first=True)
        history, lengths = history.to(log_probs.device), lengths.to(log_probs.device)
        scores = penalize_repetitions(log_probs, history, options.repetition_penalty, lengths)
        token = restrict(scores, history.size(1), EOS_ID, options.min_length, self.banned,
                         history, options.no_repeat_ngram, lengths).argmax(dim=1)
        chosen = log_probs.gather(1, token.unsqueeze(1)).squeeze(1).double().tolist()
        chosen_scores = scores.gather(1, token.unsqueeze(1)).squeeze(1).double().tolist()
        attention = attention.float().cpu()
        finished, keep = [], []
        for r, (row, tok) in enumerate(zip(self._rows, token.tolist(), strict=True)):
            row.log_prob += chosen[r]
            row.score += chosen_scores[r]
            row.attention.append(attention[r, : row.src_length])
            ended = tok == EOS_ID
            if not ended:
                row.tokens.append(tok)
            if ended or len(row.tokens) == options.max_length:
                hyp = Hypothesis(row.tokens, row.score, row.log_prob, ended,
                                 torch.stack(row.attention))
                finished.append((row.tag, hyp))
            else:
                keep.append(r)
        self._rows = [self._rows[r] for r in keep]
        if not keep:
            self._state = self._prev = None
        elif len(keep) < len(token):
            rows = torch.tensor(keep, dtype=torch.long, device=token.device)
            self._state, self._prev = state.select(rows), token.index_select(0, rows)
        else:
            self._state, self._prev = state, token
        return finished
