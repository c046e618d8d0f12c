"""The Transformer's incremental decoding: its key/value cache gives what re-running the
prefix gives, through the search functions unchanged; ``select`` and the attention map."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from padless.data.batch import Batch
from padless.decoding.beam import beam_search
from padless.decoding.greedy import greedy_search, sample_search
from padless.decoding.options import SearchOptions
from padless.masking import lengths_to_mask, pad_batch
from padless.models.config import ModelConfig
from padless.models.transformer import Transformer

BOS, EOS, VOCAB = 1, 2, 13
SOURCES = [[4, 5, 6, 7, 4], [7, 4], [5, 5, 6], [7], [6, 5, 4, 7, 8, 9]]


def make_model(seed: int = 3, eos_bias: float = 1.0) -> Transformer:
    """A seeded random float64 model. Its weights are doubled (a freshly initialised
    Transformer barely depends on its source) and ``eos_bias`` lets some answers finish
    early: the defaults and (4, 1.25) give answers of several lengths."""
    torch.manual_seed(seed)
    config = ModelConfig(arch="transformer", embedding_size=8, hidden_size=8, num_heads=2,
                         ffn_size=12, num_layers=2, dropout=0.0, tie_output=True)
    model = Transformer(config, VOCAB).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
        model.output.bias[EOS] += eos_bias
    return model


@dataclass(frozen=True)
class PrefixState:
    """No cache: the source and the tokens fed so far, ``[S, R]`` and ``[t, R]``."""

    src: torch.Tensor
    src_lengths: torch.Tensor
    prefix: torch.Tensor

    def select(self, rows: torch.Tensor) -> PrefixState:
        return PrefixState(self.src[:, rows], self.src_lengths[rows.cpu()], self.prefix[:, rows])


class Uncached:
    """The same model decoded by re-running the whole prefix at every step."""

    def __init__(self, model: Transformer) -> None:
        self.model, self.specials = model, model.specials

    def start_decoding(self, src: torch.Tensor, src_lengths: torch.Tensor) -> PrefixState:
        return PrefixState(src, src_lengths, src.new_zeros(0, src.shape[1]))

    def decode_step(self, prev: torch.Tensor, state: PrefixState):
        prefix = torch.cat([state.prefix, prev.unsqueeze(0)])  # [t + 1, R]
        steps, rows = prefix.shape
        full = torch.ones_like(prefix, dtype=torch.bool)
        batch = Batch(src=state.src, src_lengths=state.src_lengths,
                      src_mask=lengths_to_mask(state.src_lengths, state.src.shape[0]),
                      tgt_in=prefix, tgt_out=prefix, tgt_mask=full, n_tokens=prefix.numel())
        last = self.model.target_states(batch).view(steps, rows, -1)[-1]
        log_probs = torch.log_softmax(self.model.output(last), dim=-1)
        attention = torch.zeros(rows, state.src.shape[0], dtype=log_probs.dtype)  # unused
        return log_probs, PrefixState(state.src, state.src_lengths, prefix), attention


plain = SearchOptions.plain
SEARCHES = {
    "greedy": lambda m, src, n: greedy_search(m, src, n, plain(max_length=9)),
    "beam": lambda m, src, n: beam_search(m, src, n, plain("beam", beam_size=3, n_best=3,
                                                           alpha=0.6, max_length=9)),
    "sample": lambda m, src, n: sample_search(
        m, src, n, plain("sample", max_length=9, top_k=5),
        generator=torch.Generator().manual_seed(3)),
}


@pytest.mark.parametrize(("seed", "eos_bias"), [(3, 1.0), (4, 1.25)])
@pytest.mark.parametrize("method", SEARCHES)
def test_cached_decoding_equals_rerunning_the_prefix(
    method: str, seed: int, eos_bias: float
) -> None:
    model = make_model(seed, eos_bias)
    src, lengths = pad_batch(SOURCES)
    search = SEARCHES[method]
    with torch.no_grad():
        cached = search(model, src, lengths)
        uncached = search(Uncached(model), src, lengths)
    lengths_seen = set()
    for mine, theirs in zip(cached.hypotheses, uncached.hypotheses, strict=True):
        assert [h.tokens for h in mine] == [h.tokens for h in theirs]
        assert [h.score for h in mine] == pytest.approx([h.score for h in theirs], abs=1e-9)
        lengths_seen.update(len(h.tokens) for h in mine)
    assert len(lengths_seen) > 1  # rows finished at different steps: dropping was exercised


def test_decode_step_loop_scores_like_the_loss() -> None:
    model = make_model()
    pairs = [(s, list(reversed(s))) for s in SOURCES]
    batch = Batch.from_pairs(pairs)
    state = model.start_decoding(batch.src, batch.src_lengths)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(batch.tgt_in.shape[0]):
        log_probs, state, _ = model.decode_step(batch.tgt_in[t], state)
        assert log_probs.dtype == torch.float64
        nll = -log_probs.gather(1, batch.tgt_out[t].unsqueeze(1)).squeeze(1)
        total = total + nll[batch.tgt_mask[t]].sum()
    torch.testing.assert_close(total, model.loss(batch, reduction="sum").loss)
    assert state.steps == batch.tgt_in.shape[0]


def test_state_select_repeats_reorders_and_drops_rows() -> None:
    """The self-attention cache follows every selection; the encoder's keys and values are
    copied only when the rows' sources change."""
    model = make_model()
    src, lengths = pad_batch(SOURCES[:4])
    state = model.start_decoding(src, lengths)
    expanded = state.select(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert torch.equal(expanded.memory[0], state.memory[0].repeat_interleave(2, dim=1))
    _, stepped, _ = model.decode_step(torch.full((8,), BOS), expanded)
    _, stepped, _ = model.decode_step(torch.arange(3, 11), stepped)
    assert stepped.steps == 2 and stepped.uniform == 2 and stepped.lengths.tolist() == [2] * 8
    assert stepped.keys[1].shape == (8, 2, stepped.capacity, 4)  # [R, heads, capacity, d]
    order = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])  # beams of each sentence swapped
    swapped = stepped.select(order)
    assert all(a is b for a, b in zip(swapped.memory, stepped.memory, strict=True))
    assert swapped.key_mask is stepped.key_mask
    for got, had in zip(swapped.keys + swapped.values, stepped.keys + stepped.values, strict=True):
        assert torch.equal(got[:, :, :2], had[order, :, :2])
    dropped = swapped.select(torch.tensor([2, 3, 6]))
    assert torch.equal(dropped.sources, torch.tensor([1, 1, 3]))
    assert torch.equal(dropped.memory[1], state.memory[1][:, [1, 1, 3]])
    assert torch.equal(dropped.key_mask, state.key_mask[[1, 1, 3]])
    # the selected state decodes on as the rows it came from
    want, _, _ = model.decode_step(torch.tensor([4, 4, 9]), stepped.select(
        order[torch.tensor([2, 3, 6])]))
    got, _, _ = model.decode_step(torch.tensor([4, 4, 9]), dropped)
    torch.testing.assert_close(got, want)


def test_attention_is_the_last_layers_cross_attention_zero_at_pads() -> None:
    model = make_model()
    src, lengths = pad_batch(SOURCES)
    state = model.start_decoding(src, lengths)
    for prev in (torch.full((len(SOURCES),), BOS), torch.arange(4, 4 + len(SOURCES))):
        _, state, weights = model.decode_step(prev, state)
        assert weights.shape == (len(SOURCES), src.shape[0])
        assert torch.all(weights[~lengths_to_mask(lengths).t()] == 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(SOURCES), dtype=torch.float64))
    result = greedy_search(model, src, lengths, plain(max_length=5), return_attention=True)
    for source, (hyp,) in zip(SOURCES, result.hypotheses, strict=True):
        assert hyp.attention.shape[1] == len(source)


def test_decoding_is_padding_invariant() -> None:
    model = make_model(seed=2)
    src, lengths = pad_batch(SOURCES)
    options = plain("beam", beam_size=3, max_length=8)
    together = beam_search(model, src, lengths, options)
    for i, source in enumerate(SOURCES):
        alone = beam_search(model, *pad_batch([source]), options)
        assert alone.tokens[0] == together.tokens[i]
        assert alone.scores[0] == pytest.approx(together.scores[i], abs=1e-9)


def test_the_cache_grows_past_its_first_capacity() -> None:
    """Answers longer than the preallocated cache: it doubles, the answers do not change."""
    from padless.models.kv_cache import INITIAL_CAPACITY

    model = make_model(seed=5, eos_bias=-3.0)  # EOS unlikely: long answers
    src, lengths = pad_batch(SOURCES)
    options = SearchOptions.plain(max_length=2 * INITIAL_CAPACITY + 3)
    with torch.no_grad():
        cached = greedy_search(model, src, lengths, options)
        uncached = greedy_search(Uncached(model), src, lengths, options)
    assert cached.tokens == uncached.tokens
    assert max(len(t) for t in cached.tokens) > 2 * INITIAL_CAPACITY
    assert cached.scores == pytest.approx(uncached.scores, abs=1e-9)


def test_rows_at_different_steps_attend_to_their_own_past_only() -> None:
    """Two states concatenated after different numbers of steps decode as they would apart."""
    model = make_model()
    first = model.start_decoding(*pad_batch(SOURCES[:2]))
    for token in (BOS, 5, 6):
        _, first, _ = model.decode_step(torch.full((2,), token), first)
    second = model.start_decoding(*pad_batch(SOURCES[2:4]))
    _, second, _ = model.decode_step(torch.full((2,), BOS), second)
    both = first.select(torch.arange(2)).concat(second.select(torch.arange(2)))
    assert both.uniform is None and both.lengths.tolist() == [3, 3, 1, 1]
    want_first, _, att_first = model.decode_step(torch.tensor([7, 8]), first)
    want_second, _, att_second = model.decode_step(torch.tensor([9, 4]), second)
    got, after, att = model.decode_step(torch.tensor([7, 8, 9, 4]), both)
    torch.testing.assert_close(got, torch.cat([want_first, want_second]))
    width = max(att_first.shape[1], att_second.shape[1])
    pad = torch.nn.functional.pad
    torch.testing.assert_close(
        att,
        torch.cat(
            [
                pad(att_first, (0, width - att_first.shape[1])),
                pad(att_second, (0, width - att_second.shape[1])),
            ]
        ),
    )
    assert after.lengths.tolist() == [4, 4, 2, 2]
