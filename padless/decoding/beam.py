"""Batched beam search with the GNMT length penalty and exact stopping: :func:`beam_search`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from padless.decoding.options import SearchOptions
from padless.decoding.repetition import penalize_repetitions
from padless.decoding.search import (
    Hypothesis,
    SearchResult,
    StepModel,
    Stopped,
    length_penalty,
    restrict,
)

__all__ = ["beam_search"]


@torch.no_grad()
def beam_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions | None = None,
    *,
    return_attention: bool = False,
    stop: Callable[[], bool] | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> SearchResult:
    """Batched beam search with the GNMT length penalty and exact stopping.

    Each step expands the ``beam_size`` open hypotheses of every sentence and takes the
    ``2 * beam_size`` best continuations (as fairseq does). An EOS continuation ranked among
    the first ``beam_size`` becomes a finished hypothesis; the ``beam_size`` best non-EOS
    continuations stay open. Up to ``beam_size`` finished hypotheses are kept per sentence.

    Beams are ranked by their summed scores: log-probabilities, with repeated tokens'
    multiplied by ``repetition_penalty`` (see :mod:`padless.decoding.search`). A sentence
    stops only when it holds ``beam_size`` finished hypotheses and no open beam can beat the
    worst of them: an open beam with summed score ``L <= 0`` can reach at most
    ``L / length_penalty(max_length, alpha)`` (scores only fall, the penalty only grows).
    Otherwise it stops at ``max_length``, where open beams count as unfinished hypotheses.
    With ``beam_size=1`` and ``alpha=0`` this is greedy search.

    Args:
        model, src ``[S, B]``, src_lengths ``[B]``: as
            :func:`padless.decoding.greedy.greedy_search`.
        options: ``beam_size`` (``k``), ``alpha`` (the length-penalty exponent, 0: rank by raw
            log-probability), ``n_best`` (hypotheses returned per sentence), and the settings
            every search has (default ``SearchOptions(method="beam")``); its method is not
            read.
        return_attention: keep each hypothesis' ``[T, S_b]`` attention.
        stop: asked before every step; True raises
            :class:`~padless.decoding.search.Stopped`.
        prefixes: each sentence's first tokens (ids), given: its one live beam takes them,
            and they add nothing to the scores (only the tokens the search chose count).

    Returns:
        ``hypotheses[b]``: up to ``n_best`` hypotheses, best score first.
    """
    options = SearchOptions("beam") if options is None else options
    beam_size, alpha, max_length = options.beam_size, options.alpha, options.max_length
    min_length, banned_ids = options.min_length, options.banned_ids(model.specials)
    no_repeat_ngram, repetition_penalty = options.no_repeat_ngram, options.repetition_penalty
    bos_id, eos_id = model.specials.bos, model.specials.eos
    k, batch_size, device = beam_size, src.size(1), src.device
    beams = _Beams.start(batch_size, k, bos_id, src.size(0), device, return_attention)
    state = model.start_decoding(src, src_lengths).select(
        torch.arange(batch_size, device=device).repeat_interleave(k))
    finished: list[list[Hypothesis]] = [[] for _ in range(batch_size)]

    def finish(row: int, summed: float, length: int, done: bool, last_log_prob: float = 0.0,
               last_attention: torch.Tensor | None = None) -> None:  # + EOS's if done
        sentence = beams.active[row // k]
        log_prob = float(beams.log_prob[row]) + last_log_prob
        hyp = beams.hypothesis(row, log_prob, summed / length_penalty(length, alpha), done,
                               last_attention, int(src_lengths[sentence]))
        _insert_finished(finished[sentence], hyp, k)

    for step in range(max_length):
        if stop is not None and stop():
            raise Stopped
        n_active = len(beams.active)
        log_probs, state, attention = model.decode_step(beams.prev, state)
        log_probs, vocab = log_probs.float(), log_probs.size(1)
        scores = penalize_repetitions(log_probs, beams.tokens, repetition_penalty)
        allowed = restrict(
            scores,
            step,
            eos_id,
            min_length,
            banned_ids,
            beams.tokens,
            no_repeat_ngram,
            inplace=scores is not log_probs,
        )
        if prefixes is not None:
            allowed, log_probs = _forced(allowed, log_probs, prefixes, beams.active, step, k)
        candidates = (beams.score.view(-1, 1) + allowed).view(n_active, k * vocab)
        top_score, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)  # [n, 2k]
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == eos_id

        # EOS among the first k candidates: a finished hypothesis of length step + 1
        for i, c in (is_eos[:, :k] & top_score[:, :k].isfinite()).nonzero().tolist():
            row = i * k + int(top_beam[i, c])
            finish(row, float(top_score[i, c]), step + 1, True, float(log_probs[row, eos_id]),
                   attention[row])

        # the k best non-EOS candidates stay open
        open_score, chosen = top_score.masked_fill(is_eos, -math.inf).topk(k, dim=1)
        rows = (torch.arange(n_active, device=device).unsqueeze(1) * k
                + top_beam.gather(1, chosen)).view(-1)
        tokens = top_token.gather(1, chosen).view(-1)
        beams.advance(rows, open_score, log_probs[rows, tokens], tokens, attention)
        state = state.select(rows)

        if step == max_length - 1:  # out of length: open beams become unfinished hypotheses
            for i, j in beams.score.isfinite().nonzero().tolist():
                finish(i * k + j, float(beams.score[i, j]), max_length, False)
            break
        best_open = (beams.score.max(dim=1).values / length_penalty(max_length, alpha))
        keep = [
            i for i, (sentence, best) in enumerate(zip(beams.active, best_open.tolist(),
                                                       strict=True))
            if len(finished[sentence]) < k or best > finished[sentence][-1].score
        ]
        if len(keep) < n_active:  # drop finished sentences from the batch
            if not keep:
                break
            state = state.select(beams.keep(keep))

    return SearchResult([kept[: options.n_best] for kept in finished])


@dataclass
class _Beams:
    """The open hypotheses of the sentences still decoding.

    Row ``i * k + j`` of every tensor is beam ``j`` of the ``i``-th active sentence.
    """

    k: int
    active: list[int]  # original index of each active sentence
    score: torch.Tensor  # [n, k] summed (penalised) scores of the open beams (-inf: unused)
    log_prob: torch.Tensor  # [n * k] the model's log-probabilities of the open beams
    prev: torch.Tensor  # [n * k] the last token of each beam
    tokens: torch.Tensor  # [n * k, t] the tokens so far
    attention: torch.Tensor | None  # [n * k, t, S] their attention, if asked for

    @classmethod
    def start(cls, batch_size: int, k: int, bos_id: int, src_steps: int,
              device: torch.device, keep_attention: bool) -> _Beams:
        # only beam 0 is live at first, so the k beams do not start as k copies of one
        score = torch.full((batch_size, k), -math.inf, device=device)
        score[:, 0] = 0.0
        rows = batch_size * k
        return cls(
            k, list(range(batch_size)), score, torch.zeros(rows, device=device),
            torch.full((rows,), bos_id, dtype=torch.long, device=device),
            torch.empty(rows, 0, dtype=torch.long, device=device),
            torch.empty(rows, 0, src_steps, device=device) if keep_attention else None,
        )

    def hypothesis(self, row: int, log_prob: float, score: float, finished: bool,
                   last_attention: torch.Tensor | None, src_length: int) -> Hypothesis:
        """Beam ``row`` as a hypothesis (``last_attention``: the attention of its EOS step)."""
        attention = None
        if self.attention is not None:
            steps = list(self.attention[row])
            if last_attention is not None:
                steps.append(last_attention)
            attention = torch.stack(steps)[:, :src_length].float().cpu()
        return Hypothesis(self.tokens[row].tolist(), score, log_prob, finished, attention)

    def advance(self, rows: torch.Tensor, score: torch.Tensor, step_log_prob: torch.Tensor,
                tokens: torch.Tensor, step_attention: torch.Tensor) -> None:
        """Beam ``r`` continues old row ``rows[r]`` with ``tokens[r]``: its summed score is
        now ``score.view(-1)[r]``, its log-probability grows by ``step_log_prob[r]``."""
        self.score, self.prev = score, tokens
        self.log_prob = self.log_prob.index_select(0, rows) + step_log_prob
        self.tokens = torch.cat([self.tokens.index_select(0, rows), tokens.unsqueeze(1)], dim=1)
        if self.attention is not None:
            self.attention = torch.cat([self.attention.index_select(0, rows),
                                        step_attention.index_select(0, rows)[:, None]], dim=1)

    def keep(self, keep: list[int]) -> torch.Tensor:
        """Keep the active sentences at positions ``keep``; returns the rows they keep."""
        device = self.log_prob.device
        keep_t = torch.tensor(keep, device=device)
        rows = (keep_t.unsqueeze(1) * self.k + torch.arange(self.k, device=device)).view(-1)
        self.active = [self.active[i] for i in keep]
        self.score = self.score.index_select(0, keep_t)
        self.log_prob = self.log_prob.index_select(0, rows)
        self.prev, self.tokens = self.prev.index_select(0, rows), self.tokens.index_select(0, rows)
        if self.attention is not None:
            self.attention = self.attention.index_select(0, rows)
        return rows


def _forced(allowed: torch.Tensor, log_probs: torch.Tensor, prefixes: Sequence[Sequence[int]],
            active: list[int], step: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``allowed`` and ``log_probs`` where the beams of sentences still in their prefix have
    only the prefix's token, at a score of 0 (copies, where anything is forced)."""
    forced = [(i, prefixes[s][step]) for i, s in enumerate(active) if step < len(prefixes[s])]
    if not forced:
        return allowed, log_probs
    rows = torch.tensor([i * k + j for i, _ in forced for j in range(k)],
                        device=allowed.device)
    tokens = torch.tensor([t for _, t in forced for _ in range(k)], device=allowed.device)
    allowed, log_probs = allowed.clone(), log_probs.clone()
    allowed[rows] = -math.inf
    allowed[rows, tokens] = 0.0
    log_probs[rows, tokens] = 0.0
    return allowed, log_probs


def _insert_finished(kept: list[Hypothesis], hyp: Hypothesis, capacity: int) -> None:
    """Insert ``hyp`` into ``kept`` (sorted best first), keeping at most ``capacity``."""
    if len(kept) == capacity and hyp.score <= kept[-1].score:
        return
    kept.append(hyp)
    kept.sort(key=lambda h: h.score, reverse=True)
    del kept[capacity:]
