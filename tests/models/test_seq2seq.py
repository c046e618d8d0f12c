"""The seq2seq model: shapes, masks, fast path == step path, padding invariance, training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from padless.data.batch import Batch
from padless.data.vocabulary import Specials
from padless.models.attention import LuongAttention
from padless.models.config import ModelConfig
from padless.models.seq2seq import Encoded, GRUDecoderState, Seq2Seq
from tests.helpers import fit, make_batch

PAD, BOS, EOS = 0, 1, 2
VOCAB = 23
PAIRS = [
    ([3, 4, 5, 6], [7, 8]),
    ([9], [10, 11, 12, 13, 14]),
    ([15, 16, 17, 18, 19, 20], [21]),
    ([5, 5], [6, 7, 8]),
]
METHODS = [(a, m) for a in ("dot", "general", "concat") for m in ("sum", "project")]


def make_model(
    attention: str = "dot", merge: str = "sum", dtype: torch.dtype = torch.float64, **kwargs
) -> Seq2Seq:
    torch.manual_seed(0)
    options = dict(embedding_size=6, hidden_size=8, num_layers=2, dropout=0.0)
    options.update(kwargs)
    config = ModelConfig(attention=attention, merge_directions=merge, **options)
    return Seq2Seq(config, VOCAB, Specials(pad=PAD)).to(dtype)


def per_token_losses(model: Seq2Seq, batch: Batch) -> torch.Tensor:
    """``[T, B]`` per-position losses (0 at pads)."""
    return model.loss(batch, reduction="none").loss


@pytest.mark.parametrize(("attention", "merge"), METHODS)
def test_shapes(attention: str, merge: str) -> None:
    model = make_model(attention, merge)
    batch = make_batch(PAIRS)
    steps, size = batch.src.shape
    encoded = model.encode(batch.src, batch.src_lengths)
    assert isinstance(encoded, Encoded)
    assert encoded.memory.shape == (steps, size, 8)
    assert encoded.src_mask.shape == (steps, size) and encoded.src_mask.dtype == torch.bool
    assert torch.equal(encoded.src_mask, batch.src_mask)
    assert encoded.hidden.shape == (2, size, 8)
    assert torch.all(encoded.memory[~batch.src_mask] == 0)
    state = model.start_decoding(batch.src, batch.src_lengths)
    assert isinstance(state, GRUDecoderState)
    assert torch.equal(state.hidden, encoded.hidden) and torch.equal(state.memory, encoded.memory)
    log_probs, state, weights = model.decode_step(batch.tgt_in[0], state)
    assert log_probs.shape == (size, VOCAB) and state.hidden.shape == (2, size, 8)
    assert weights.shape == (size, steps)


def test_decode_step_log_probs_are_float32_distributions() -> None:
    model = make_model(dtype=torch.float32)
    batch = make_batch(PAIRS)
    state = model.start_decoding(batch.src, batch.src_lengths)
    log_probs, _, _ = model.decode_step(batch.tgt_in[0], state)
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(len(batch)))


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
def test_attention_is_exactly_zero_on_source_pads(attention: str) -> None:
    model = make_model(attention)
    batch = make_batch(PAIRS)
    memory, src_mask, hidden = model.encode(batch.src, batch.src_lengths)
    _, _, weights = model.decoder(batch.tgt_in, hidden, memory, src_mask)  # [B, T, S]
    pads = ~src_mask.t().unsqueeze(1).expand_as(weights)
    assert torch.all(weights[pads] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2], dtype=weights.dtype))
    state = model.start_decoding(batch.src, batch.src_lengths)
    _, _, step_weights = model.decode_step(batch.tgt_in[0], state)
    assert torch.all(step_weights[~src_mask.t()] == 0)


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
def test_fully_padded_source_row_does_not_nan(attention: str) -> None:
    attend = LuongAttention(attention, 4).double()
    query, memory = torch.randn(3, 2, 4, dtype=torch.float64), torch.randn(5, 2, 4).double()
    mask = torch.ones(5, 2, dtype=torch.bool)
    mask[:, 1] = False
    query.requires_grad_(True)
    context, weights = attend(query, memory, mask)
    assert torch.all(weights[1] == 0) and torch.all(context[:, 1] == 0)
    context.sum().backward()
    assert torch.isfinite(query.grad).all()

    # Through the whole model: a source of length 0 next to a normal one.
    model = make_model(attention)
    src = torch.tensor([[3, PAD], [4, PAD]])
    lengths = torch.tensor([2, 0])
    encoded = model.encode(src, lengths)
    assert torch.all(encoded.memory[:, 1] == 0) and torch.all(encoded.hidden[:, 1] == 0)
    state = model.start_decoding(src, lengths)
    log_probs, _, weights = model.decode_step(torch.tensor([BOS, BOS]), state)
    assert torch.isfinite(log_probs).all() and torch.all(weights[1] == 0)


@pytest.mark.parametrize(("attention", "merge"), METHODS)
def test_fast_path_equals_step_path(attention: str, merge: str) -> None:
    """Loss and every parameter's gradient agree (float64, dropout 0, teacher forcing)."""
    model = make_model(attention, merge)
    batch = make_batch(PAIRS)
    out = model.decoder.out

    def loss_and_grads(stepwise: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        encoded = model.encode(batch.src, batch.src_lengths)
        if stepwise:
            states = model._stepwise_states(batch.tgt_in, encoded, lambda: True)
        else:
            states = model._teacher_forced_states(batch.tgt_in, encoded)
        loss = torch.nn.functional.cross_entropy(
            out(states)[batch.tgt_mask], batch.tgt_out[batch.tgt_mask], reduction="sum"
        )
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    fast_loss, fast_grads = loss_and_grads(stepwise=False)
    step_loss, step_grads = loss_and_grads(stepwise=True)
    torch.testing.assert_close(fast_loss, step_loss)
    assert fast_grads.keys() == step_grads.keys()
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], step_grads[name], msg=name)
    # And the public loss (fast path, masked_linear_cross_entropy) is the same number.
    torch.testing.assert_close(model.loss(batch).loss.detach(), fast_loss)


def test_decode_step_loop_scores_like_the_loss() -> None:
    """Search's decode_step, fed the references, reproduces the training loss."""
    model = make_model("general", "project")
    batch = make_batch(PAIRS)
    state = model.start_decoding(batch.src, batch.src_lengths)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(batch.tgt_in.shape[0]):
        log_probs, state, _ = model.decode_step(batch.tgt_in[t], state)
        nll = -log_probs.gather(1, batch.tgt_out[t].unsqueeze(1)).squeeze(1)
        total = total + nll[batch.tgt_mask[t]].sum()
    torch.testing.assert_close(total, model.loss(batch, reduction="sum").loss)


def test_state_select_repeats_reorders_and_drops_rows() -> None:
    """One method serves beam expansion, beam reordering and dropping finished rows; the
    encoder outputs are copied only when the rows' sources change."""
    model = make_model("general")
    batch = make_batch(PAIRS)
    state = model.start_decoding(batch.src, batch.src_lengths)
    expanded = state.select(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert torch.equal(expanded.memory, state.memory.repeat_interleave(2, dim=1))
    assert torch.equal(expanded.sources, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    _, stepped, _ = model.decode_step(torch.full((8,), BOS), expanded)
    swapped = stepped.select(torch.tensor([1, 0, 3, 2, 5, 4, 7, 6]))  # beams of a sentence
    assert swapped.memory is stepped.memory  # same sources: nothing copied
    assert torch.equal(swapped.hidden, stepped.hidden[:, [1, 0, 3, 2, 5, 4, 7, 6]])
    dropped = swapped.select(torch.tensor([2, 3, 6]))
    assert torch.equal(dropped.sources, torch.tensor([1, 1, 3]))
    assert torch.equal(dropped.memory, state.memory[:, [1, 1, 3]])
    assert torch.equal(dropped.src_mask, state.src_mask[:, [1, 1, 3]])


def test_concatenated_states_decode_as_the_states_apart() -> None:
    """Rows that join a running batch (``concat``) step exactly as they would apart, whatever
    the two parts' source lengths."""
    model = make_model("general").double()
    first, second = make_batch(PAIRS[:2]), make_batch(PAIRS[2:])
    a = model.start_decoding(first.src, first.src_lengths)
    _, a, _ = model.decode_step(torch.full((2,), BOS), a)  # a has decoded one step already
    b = model.start_decoding(second.src, second.src_lengths)
    joined = a.concat(b).select(torch.tensor([3, 0, 1, 2]))
    prev = torch.tensor([5, 6, 7, 8])
    log_probs, _, attention = model.decode_step(prev, joined)
    apart_a, _, attention_a = model.decode_step(prev[[1, 2]], a)
    apart_b, _, attention_b = model.decode_step(prev[[3, 0]], b)
    torch.testing.assert_close(log_probs[[1, 2]], apart_a)
    torch.testing.assert_close(log_probs[[3, 0]], apart_b)
    width_a, width_b = attention_a.shape[1], attention_b.shape[1]
    torch.testing.assert_close(attention[[1, 2], :width_a], attention_a)
    torch.testing.assert_close(attention[[3, 0], :width_b], attention_b)
    assert attention[[1, 2], width_a:].abs().sum() == 0  # padding gets no attention
    assert len(set(joined.sources.tolist())) == 4


def test_loss_counts_real_tokens_and_reductions_agree() -> None:
    model = make_model()
    batch = make_batch(PAIRS)
    total, n_tokens = model.loss(batch)
    assert n_tokens == batch.n_tokens == sum(len(t) + 1 for _, t in PAIRS)
    mean, _ = model.loss(batch, reduction="mean")
    torch.testing.assert_close(mean, total / n_tokens)
    assert model.loss(batch, teacher_forcing_ratio=0.0).n_tokens == batch.n_tokens


def test_padding_invariance() -> None:
    """Extra padding (a longer neighbour, an extra pad step, garbage at pads) changes nothing."""
    model = make_model("concat", "project")
    reference = per_token_losses(model, make_batch(PAIRS[:2]))  # [T, 2]

    longer = per_token_losses(model, make_batch([*PAIRS[:2], ([4] * 9, [5] * 8)]))
    torch.testing.assert_close(longer[: reference.shape[0], :2], reference)

    batch = make_batch(PAIRS[:2])
    pad_row = torch.full((1, 2), PAD)
    extra = dataclasses.replace(
        batch,
        src=torch.cat([batch.src, pad_row]),
        src_mask=torch.cat([batch.src_mask, pad_row.bool()]),
        tgt_in=torch.cat([batch.tgt_in, pad_row]),
        tgt_out=torch.cat([batch.tgt_out, pad_row]),
        tgt_mask=torch.cat([batch.tgt_mask, pad_row.bool()]),
    )
    torch.testing.assert_close(per_token_losses(model, extra)[:-1], reference)

    # Whatever sits at pads is never read.
    noisy = dataclasses.replace(
        batch,
        src=batch.src.masked_fill(~batch.src_mask, 17),
        tgt_in=torch.where(batch.tgt_mask, batch.tgt_in, 19),
    )
    torch.testing.assert_close(per_token_losses(model, noisy), reference)


def test_batch_first_batches_give_the_same_loss() -> None:
    model = make_model()
    torch.testing.assert_close(
        model.loss(make_batch(PAIRS, batch_first=True)).loss, model.loss(make_batch(PAIRS)).loss
    )


def test_teacher_forcing_coins_follow_the_global_seed() -> None:
    model = make_model()
    batch = make_batch(PAIRS)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(model.loss(batch, teacher_forcing_ratio=0.5, teacher_forcing="token").loss)
    torch.testing.assert_close(runs[0], runs[1])
    free_running = model.loss(batch, teacher_forcing_ratio=0.0).loss
    assert not torch.allclose(free_running, model.loss(batch).loss)
    with pytest.raises(ValueError, match="teacher_forcing_ratio"):
        model.loss(batch, teacher_forcing_ratio=1.5)
    with pytest.raises(ValueError, match="teacher_forcing"):
        model.loss(batch, teacher_forcing="step")


def test_bf16_autocast_loss_is_finite() -> None:
    model = make_model(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(make_batch(PAIRS), reduction="mean").loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_embeddings_sharing_tying_and_parameter_groups() -> None:
    shared = make_model(embedding_size=8, tie_output=True)
    assert shared.encoder.embedding is shared.decoder.embedding
    assert shared.decoder.out.weight is shared.decoder.embedding.weight
    separate = make_model(shared_embeddings=False)
    assert separate.encoder.embedding is not separate.decoder.embedding
    for model in (shared, separate):
        groups = model.parameter_groups()
        ids = [id(p) for group in groups.values() for p in group]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("embedding_size", 0),
        ("hidden_size", -3),
        ("num_layers", 1.5),
        ("attention", "bahdanau"),
        ("dropout", 1.0),
        ("merge_directions", "mean"),
        ("shared_embeddings", "yes"),
        ("tie_output", True),  # embedding_size 500 != hidden_size 8
    ],
)
def test_config_errors_name_the_field(field: str, value: object) -> None:
    overrides = {"hidden_size": 8} if field == "tie_output" else {}
    with pytest.raises(ValueError, match=f"^model\\.{field}: "):
        ModelConfig(**{**overrides, field: value})


def test_tiny_model_overfits() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embedding_size=32, hidden_size=32, dropout=0.0), VOCAB)
    batch = make_batch(PAIRS)
    losses = fit(model, batch, lr=1e-2, steps=100)
    assert losses[-1] < 0.05 * losses[0], losses[::10]


def test_full_dropout_scope_also_drops_source_embeddings_and_attentional_states() -> None:
    """``dropout_scope: full`` adds dropout where the tutorial has none; in eval mode (and in
    the weights it saves) the model is the same as with ``tutorial``."""
    batch = make_batch(PAIRS)
    tutorial = make_model(dropout=0.5, num_layers=1)  # one layer: no dropout between layers
    full = make_model(dropout=0.5, num_layers=1, dropout_scope="full")
    full.load_state_dict(tutorial.state_dict())  # same keys: no new weights
    assert full.encoder.embedding_dropout.p == full.decoder.output_dropout.p == 0.5
    assert tutorial.encoder.embedding_dropout.p == tutorial.decoder.output_dropout.p == 0.0
    tutorial.eval(), full.eval()
    with torch.no_grad():
        torch.testing.assert_close(full.loss(batch).loss, tutorial.loss(batch).loss)
    full.train()
    torch.manual_seed(1)
    memory_a, _ = full.encoder(batch.src, batch.src_lengths)
    torch.manual_seed(2)
    memory_b, _ = full.encoder(batch.src, batch.src_lengths)
    assert not torch.allclose(memory_a, memory_b)  # the source embeddings were dropped out
    tutorial.train()
    memory_c, _ = tutorial.encoder(batch.src, batch.src_lengths)
    memory_d, _ = tutorial.encoder(batch.src, batch.src_lengths)
    torch.testing.assert_close(memory_c, memory_d)  # one layer, tutorial scope: nothing to drop
    encoded = full.encode(batch.src, batch.src_lengths)
    torch.manual_seed(3)
    states_a, _, _ = full.decoder(batch.tgt_in, encoded.hidden, encoded.memory, encoded.src_mask)
    dropped = (states_a == 0) & batch.tgt_mask.unsqueeze(-1)
    assert 0.3 < dropped.float().sum().item() / (batch.n_tokens * 8) < 0.7  # tanh is never 0


def test_dropout_scope_is_checked() -> None:
    with pytest.raises(ValueError, match="model.dropout_scope: must be one of tutorial, full"):
        ModelConfig(dropout_scope="everywhere")
