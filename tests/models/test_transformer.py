"""The pad-free Transformer equals a plain padded one, and never computes a pad.

The reference below runs the model's own weights as a textbook padded Transformer: every
position of ``[B, L, H]`` tensors goes through every layer, attention with key padding and
causal masks written out (``softmax(q k^T / sqrt(d))``), then the real positions are picked.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from padless.data.batch import Batch
from padless.data.vocabulary import Specials
from padless.models import build_model
from padless.models.config import ModelConfig
from padless.models.packing import Packing
from padless.models.transformer import Transformer
from padless.models.transformer_layers import sinusoids
from padless.runtime.options import ConfigError
from padless.training.config import load_config
from tests.helpers import fit, make_batch

PAD, BOS, EOS = 0, 1, 2
VOCAB, HIDDEN, HEADS, FFN = 23, 10, 2, 14
# N_src = 13 and N_tgt = 15 real tokens in 4 x 6 = 24 padded cells per side: no size equals
# another (H 10, 2H 20, 3H 30, FFN 14, V 23), so the op probe below cannot confuse them.
PAIRS = [
    ([3, 4, 5, 6], [7, 8]),
    ([9], [10, 11, 12, 13, 14]),
    ([15, 16, 17, 18, 19, 20], [21]),
    ([5, 5], [6, 7, 8]),
]


def make_model(dtype: torch.dtype = torch.float64, **kwargs) -> Transformer:
    torch.manual_seed(0)
    options = dict(arch="transformer", embedding_size=HIDDEN, hidden_size=HIDDEN,
                   num_heads=HEADS, ffn_size=FFN, num_layers=2, dropout=0.0, tie_output=True)
    options.update(kwargs)
    model = Transformer(ModelConfig(**options), VOCAB, Specials(pad=PAD)).to(dtype)
    with torch.no_grad():  # LayerNorms away from their initial identity, biases non-zero
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


# -- the padded reference ------------------------------------------------------------------


def reference_attention(x_q, x_kv, w, b, out, heads, allowed):
    """Multi-head attention on padded ``[B, L, H]``; ``allowed [B, Lq, Lk]`` bool."""
    (w_q, w_k, w_v), (b_q, b_k, b_v) = w.chunk(3), b.chunk(3)
    batch, size = x_q.shape[0], x_q.shape[-1]

    def heads_of(x, weight, bias):
        return F.linear(x, weight, bias).view(batch, -1, heads, size // heads).transpose(1, 2)

    q, k, v = heads_of(x_q, w_q, b_q), heads_of(x_kv, w_k, b_k), heads_of(x_kv, w_v, b_v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(size // heads)
    scores = scores.masked_fill(~allowed[:, None], -math.inf)
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, -1, size)
    return out(context)


def reference_states(model: Transformer, batch: Batch) -> torch.Tensor:
    """``[n_tokens, H]``: the same weights as a padded Transformer, real rows picked."""
    t = (lambda x: x) if batch.batch_first else (lambda x: x.t())
    src, tgt, src_valid, tgt_valid = t(batch.src), t(batch.tgt_in), t(batch.src_mask), t(
        batch.tgt_mask)  # [B, L]
    table = sinusoids(max(src.shape[1], tgt.shape[1]), HIDDEN).to(model.output.weight.dtype)
    scale = math.sqrt(HIDDEN)
    x = model.src_embedding(src.clamp(0, VOCAB - 1)) * scale + table[: src.shape[1]]
    src_keys = src_valid[:, None, :].expand(-1, src.shape[1], -1)
    for layer in model.encoder_layers:
        a = layer.self_attention
        h = layer.norm1(x)
        x = x + reference_attention(h, h, a.qkv.weight, a.qkv.bias, a.out, HEADS, src_keys)
        x = x + layer.feed_forward(layer.norm2(x))
    memory = model.encoder_norm(x)
    y = model.tgt_embedding(tgt.clamp(0, VOCAB - 1)) * scale + table[: tgt.shape[1]]
    steps = tgt.shape[1]
    causal = torch.ones(steps, steps, dtype=torch.bool).tril()
    self_keys = causal[None] & tgt_valid[:, None, :]
    cross_keys = src_valid[:, None, :].expand(-1, steps, -1)
    for layer in model.decoder_layers:
        a, c = layer.self_attention, layer.cross_attention
        h = layer.norm1(y)
        y = y + reference_attention(h, h, a.qkv.weight, a.qkv.bias, a.out, HEADS, self_keys)
        w = torch.cat([c.query.weight, c.key_value.weight])
        b = torch.cat([c.query.bias, c.key_value.bias])
        y = y + reference_attention(layer.norm2(y), memory, w, b, c.out, HEADS, cross_keys)
        y = y + layer.feed_forward(layer.norm3(y))
    states = model.decoder_norm(y)  # [B, T, H]
    return (states if batch.batch_first else states.transpose(0, 1))[batch.tgt_mask]


def states_and_grads(model, batch, fn):
    """States and every parameter's gradient for a fixed random cotangent on the states."""
    model.zero_grad()
    states = fn(model, batch)
    cotangent = torch.randn(states.shape, generator=torch.Generator().manual_seed(1),
                            dtype=states.dtype)
    (states * cotangent).sum().backward()
    return states.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                             if p.grad is not None}  # not the output layer's


def packed_states(model: Transformer, batch: Batch) -> torch.Tensor:
    return model.target_states(batch)


# -- exactness -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("shared", "tied"), [(True, True), (False, False)])
def test_packed_model_equals_padded_reference_outputs_and_gradients(
    batch_first: bool, shared: bool, tied: bool
) -> None:
    model = make_model(shared_embeddings=shared, tie_output=tied)
    batch = make_batch(PAIRS, batch_first=batch_first)
    got, got_grads = states_and_grads(model, batch, packed_states)
    want, want_grads = states_and_grads(model, batch, reference_states)
    assert got.shape == (batch.n_tokens, HIDDEN)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert got_grads.keys() == want_grads.keys()
    for name in got_grads:
        assert got_grads[name].abs().sum() > 0 or "embedding" in name, name
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-9, atol=1e-12,
                                   msg=name)


def test_loss_is_the_cross_entropy_of_the_reference_states() -> None:
    model = make_model()
    batch = make_batch(PAIRS)
    loss, n_tokens = model.loss(batch)
    want = F.cross_entropy(model.output(reference_states(model, batch)), batch.real_targets(),
                           reduction="sum")
    assert n_tokens == batch.n_tokens
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-10)
    per_position = model.loss(batch, reduction="none").loss  # [T, B], 0 at pads
    assert torch.all(per_position[~batch.tgt_mask] == 0)
    torch.testing.assert_close(per_position.sum(), want)


def test_garbage_at_pads_changes_nothing() -> None:
    """Random and out-of-vocabulary ids at pads, NaN and inf pad embeddings, an extra pad
    step."""
    model = make_model(shared_embeddings=False, tie_output=False)
    batch = make_batch(PAIRS)
    want, want_grads = states_and_grads(model, batch, packed_states)
    noisy = dataclasses.replace(
        batch,
        src=batch.src.masked_fill(~batch.src_mask, -7),  # would fail in any embedding
        tgt_in=torch.where(batch.tgt_mask, batch.tgt_in,
                           torch.randint(VOCAB, 10**6, batch.tgt_in.shape)),
    )
    with torch.no_grad():  # a pad's embedding, were it ever looked up
        model.src_embedding.weight[PAD] = math.nan
        model.tgt_embedding.weight[PAD] = math.inf
    got, got_grads = states_and_grads(model, noisy, packed_states)
    assert torch.equal(got, want)
    for name in want_grads:
        assert torch.equal(got_grads[name], want_grads[name]), name

    pad_row = torch.full((1, len(batch)), PAD)
    longer = dataclasses.replace(
        batch, **{name: torch.cat([getattr(batch, name), pad_row.to(getattr(batch, name).dtype)])
                  for name in ("src", "src_mask", "tgt_in", "tgt_out", "tgt_mask")})
    torch.testing.assert_close(packed_states(model, longer), want, rtol=1e-12, atol=1e-12)


def test_a_sequence_does_not_depend_on_its_batch_mates_or_its_place() -> None:
    model = make_model()
    together = packed_states(model, make_batch([PAIRS[1], *PAIRS[2:], PAIRS[0]]))
    order = [1, 2, 3, 0]
    for place, i in enumerate(order):
        alone = packed_states(model, make_batch([PAIRS[i]]))  # [n_i, H]
        tgt_mask = make_batch([PAIRS[j] for j in order]).tgt_mask  # [T, B]
        rows = torch.zeros_like(tgt_mask, dtype=torch.long)
        rows[tgt_mask] = torch.arange(int(tgt_mask.sum()))
        mine = rows[: tgt_mask[:, place].sum(), place]
        torch.testing.assert_close(together[mine], alone, rtol=1e-12, atol=1e-12)


# -- no position-wise op sees a pad row ----------------------------------------------------


class PositionWiseOps(TorchDispatchMode):
    """Records the shapes that position-wise ops (linear layers, layer norms, embeddings,
    ReLU, dropout) receive, forward and backward: a matmul's left operand, or the number of
    token rows (all but the last dimension) of the others. Dropout on attention weights
    (``[B, heads, L, L]``) belongs to attention and is left out."""

    MATMULS = {"aten::mm", "aten::addmm"}
    ROWWISE = {"aten::native_layer_norm", "aten::native_layer_norm_backward", "aten::relu",
               "aten::threshold_backward", "aten::bernoulli_", "aten::embedding",
               "aten::embedding_dense_backward"}

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if name in self.MATMULS:
            a = tensors[-2]  # mm(a, b), addmm(bias, a, b): rows of a, or the contraction
            self.rows.append((name, tuple(a.shape)))
        elif name in self.ROWWISE:
            shape = tensors[1 if name == "aten::embedding" else 0].shape
            if name == "aten::bernoulli_" and len(shape) == 4:  # dropout's mask on CPU
                return func(*args, **(kwargs or {}))  # attention weights [B, heads, L, L]
            self.rows.append((name, (math.prod(shape[:-1]) if len(shape) > 1 else shape[0],)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_no_position_wise_op_receives_a_pad_row(precision: str) -> None:
    model = make_model(torch.float32, dropout=0.1).train()
    batch = make_batch(PAIRS)
    real = {int(batch.src_mask.sum()), batch.n_tokens}  # 13 and 15
    padded = {batch.src.numel(), batch.tgt_in.numel()}  # 24
    assert real == {13, 15} and padded == {24}

    def run(fn):
        with PositionWiseOps() as probe:
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                states = fn(model, batch)
                loss = F.cross_entropy(model.output(states), batch.real_targets()) \
                    if fn is reference_states else model.loss(batch).loss
            loss.backward()
        return probe.rows

    rows = run(packed_states)
    names = {name for name, _ in rows}
    assert {"aten::addmm", "aten::mm", "aten::native_layer_norm", "aten::embedding",
            "aten::relu", "aten::native_layer_norm_backward", "aten::bernoulli_"} <= names
    for name, shape in rows:
        assert set(shape) & real, (name, shape)
        assert not set(shape) & padded, (name, shape)
    # The probe is not vacuous: the padded reference feeds every position to the same ops.
    reference_rows = run(reference_states)
    assert any(set(shape) & padded for _, shape in reference_rows)


# -- edge cases, precision, configuration -------------------------------------------------


def test_a_source_without_real_tokens_gives_a_zero_context_not_nan() -> None:
    model = make_model()
    src, lengths = torch.tensor([[3, PAD], [4, PAD]]), torch.tensor([2, 0])
    state = model.start_decoding(src, lengths)
    log_probs, state, weights = model.decode_step(torch.tensor([BOS, BOS]), state)
    assert torch.isfinite(log_probs).all()
    assert torch.all(weights[1] == 0) and torch.all(weights[0, :2] > 0)
    empty = dataclasses.replace(make_batch(PAIRS[:2]), src_mask=torch.tensor(
        [[True, False], [True, False], [True, False], [True, False]]))
    loss = model.loss(empty).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_mask_that_is_not_right_padding_is_refused() -> None:
    batch = make_batch(PAIRS)
    holey = batch.tgt_mask.clone()
    holey[0, 0] = False
    with pytest.raises(ValueError, match="not right padding"):
        Packing.from_mask(holey)
    with pytest.raises(ValueError, match=r"\[S, B\] and \[B\]"):
        make_model().start_decoding(batch.src, batch.src_lengths[:2])


def test_bf16_autocast_loss_and_gradients_are_finite() -> None:
    model = make_model(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(make_batch(PAIRS), reduction="mean").loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        fp32 = model.loss(make_batch(PAIRS), reduction="mean").loss
    assert abs(loss.item() - fp32.item()) < 0.05 * fp32.item()


def test_dropout_is_on_in_training_and_off_in_eval() -> None:
    model = make_model(dropout=0.3)
    batch = make_batch(PAIRS)
    torch.manual_seed(1)
    a = packed_states(model, batch)
    b = packed_states(model, batch)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(packed_states(model, batch), reference_states(model, batch))


def test_embeddings_sharing_tying_and_parameter_groups() -> None:
    tied = make_model()
    assert tied.src_embedding is tied.tgt_embedding
    assert tied.output.weight is tied.src_embedding.weight
    separate = make_model(shared_embeddings=False, tie_output=False)
    assert separate.src_embedding is not separate.tgt_embedding
    for model in (tied, separate):
        groups = model.parameter_groups()
        ids = [id(p) for group in groups.values() for p in group]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))
        assert id(model.src_embedding.weight) in {id(p) for p in groups["encoder"]}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(num_heads=5), "model.num_heads: must divide hidden_size"),
        (dict(num_heads=0), "model.num_heads: must be an integer >= 1"),
        (dict(ffn_size=0), "model.ffn_size: must be an integer >= 1"),
        (dict(embedding_size=8), "model.embedding_size: must equal hidden_size"),
    ],
)
def test_config_errors_name_the_field(options: dict, message: str) -> None:
    base = dict(arch="transformer", embedding_size=12, hidden_size=12, num_heads=4)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, **options})


def test_a_gru_config_ignores_the_transformer_fields() -> None:
    """Values a Transformer refuses (5 heads for 12 dimensions) build the same GRU."""
    odd = ModelConfig(arch="gru", embedding_size=8, hidden_size=12, num_heads=5, ffn_size=7)
    plain = ModelConfig(arch="gru", embedding_size=8, hidden_size=12)
    torch.manual_seed(0)
    odd_model = build_model(odd, VOCAB)
    torch.manual_seed(0)
    plain_model = build_model(plain, VOCAB)
    assert type(odd_model) is type(plain_model) is not Transformer
    assert odd_model.state_dict().keys() == plain_model.state_dict().keys()
    for name, tensor in odd_model.state_dict().items():
        assert torch.equal(tensor, plain_model.state_dict()[name]), name


def test_a_transformer_config_refuses_teacher_forcing_below_one() -> None:
    with pytest.raises(ConfigError, match=r"^train\.teacher_forcing_ratio: the transformer"):
        load_config(None, ["model.arch=transformer", "train.teacher_forcing_ratio=0.5"])
    with pytest.raises(ValueError, match="teacher_forcing_ratio must be 1.0"):
        make_model().loss(make_batch(PAIRS), teacher_forcing_ratio=0.5)
    config = load_config("transformer")
    assert build_model(config.model, VOCAB).__class__ is Transformer


def test_tiny_model_overfits() -> None:
    model = make_model(torch.float32, hidden_size=32, embedding_size=32, ffn_size=64)
    batch = make_batch(PAIRS)
    losses = fit(model, batch, lr=3e-3, steps=60)
    assert losses[-1] < 0.05 * losses[0], losses[::10]
