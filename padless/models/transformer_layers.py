"""The layers of the pad-free Transformer: attention over packed tokens, pre-norm blocks.

Every layer takes and returns packed rows ``[N, H]`` (the real tokens only, see
:class:`padless.models.packing.Packing`), so projections, feed-forward layers and norms never
see a pad. Attention alone scatters its packed queries, keys and values into padded
per-sequence blocks ``[B, heads, L, d]`` (zeros at pads) for
``F.scaled_dot_product_attention`` and gathers the real rows of its output back:

- encoder self-attention masks the source pads (key padding mask);
- decoder self-attention is causal only: with right padding every pad of a sequence comes
  after its real tokens, so the causal mask already keeps real queries off pads;
- cross-attention masks the source pads. A source without any real token gets a zero
  context (``scaled_dot_product_attention`` returns 0 for a fully masked row), never NaN.

Queries at pad positions of a block are computed and dropped; no real row depends on them.

The blocks are pre-norm (``x + sublayer(norm(x))``) by default, with the parameters of
``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` with ``norm_first=True``:
the same function, so the two can be compared weight for weight (the benchmark does); or
post-norm (``norm(x + sublayer(x))``), as BART and Marian. Each layer also has a ``step``
for incremental decoding of one new token per row.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from padless.models.kv_cache import SelfCache
from padless.models.packing import Packing

__all__ = [
    "CrossAttention", "DecoderLayer", "EncoderLayer", "FeedForward", "SelfAttention",
    "attention_with_weights", "sinusoids",
]


def sinusoids(length: int, size: int, interleaved: bool = True) -> Tensor:
    """``[length, size]`` float64 sinusoidal position encodings (Vaswani et al., 2017).

    Interleaved (padless's): column ``2i`` is ``sin(p / 10000^(2i/size))`` and ``2i + 1``
    its cosine. Not interleaved (Marian's): the ``ceil(size / 2)`` sines, then the cosines,
    with the values rounded to float32 as Marian's table holds them.
    """
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    frequency = torch.exp(
        torch.arange(0, size, 2, dtype=torch.float64) * (-math.log(10000.0) / size))
    if not interleaved:
        half = frequency.numel()
        table = torch.cat([torch.sin(position * frequency),
                           torch.cos(position * frequency[: size - half])], dim=1)
        return table.float().double()
    table = torch.zeros(length, size + size % 2, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table[:, :size]


def attention_with_weights(
    query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention that also returns its weights (for one decoding step).

    Args:
        query: ``[R, heads, T, d]``; key, value: ``[R, heads, S, d]``.
        key_mask: ``[R, 1, 1, S]`` bool, True at real keys.

    Returns:
        ``(output [R, heads, T, d], weights [R, heads, T, S])``; weights are exactly 0 at
        masked keys, and all 0 (with a zero output) where no key is real, as
        ``F.scaled_dot_product_attention`` does.
    """
    scores = (query @ key.transpose(-1, -2)) * query.shape[-1] ** -0.5
    scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).masked_fill(~key_mask, 0.0)
    return weights.to(value.dtype) @ value, weights


def _linear_with_zero_bias(size: int, out: int) -> nn.Linear:
    """``nn.Linear(size, out)`` whose bias starts at 0 without drawing random numbers (the
    weights are drawn as before the biases were fused: same seed, same model)."""
    linear = nn.Linear(size, out, bias=False)
    linear.bias = nn.Parameter(torch.zeros(out))
    return linear


def _keys_without_bias(linear: nn.Linear, keys: slice) -> None:
    """Keep ``linear.bias[keys]`` (the keys' part) at 0 for good: zero it, and zero its
    gradient. ``q . (k + b)`` adds the same ``q . b`` to every key's score, which the softmax
    cancels, so a key bias would only ever get rounding noise as its gradient (and Adam turns
    noise into steps of ``lr``). One bias tensor keeps the projection a plain ``nn.Linear``:
    one call, and what ``torch.ao.quantization.quantize_dynamic`` converts."""
    with torch.no_grad():
        linear.bias[keys] = 0.0

    def without_keys(grad: Tensor) -> Tensor:
        grad = grad.clone()
        grad[keys] = 0.0
        return grad

    linear.bias.register_hook(without_keys)


def _fuse_old_biases(state: dict, prefix: str, names: list[str], fused: str, size: int) -> None:
    """Checkpoints of padless before 2026-12 kept the query and value biases apart (the key
    bias did not exist): fold them into the fused bias ``fused`` (key part 0)."""
    if all(prefix + name not in state for name in names if name):
        return
    parts = [state.pop(prefix + name) if name else None for name in names]
    like = next(p for p in parts if p is not None)
    state[prefix + fused] = torch.cat([like.new_zeros(size) if p is None else p for p in parts])


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused ``H -> 3H`` query/key/value projection (keys
    without a bias: see :func:`_keys_without_bias`)."""

    def __init__(self, size: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout, self.size = heads, dropout, size
        self.qkv = _linear_with_zero_bias(size, 3 * size)
        _keys_without_bias(self.qkv, slice(size, 2 * size))
        self.out = nn.Linear(size, size)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _fuse_old_biases(
            state_dict, prefix, ["query_bias", "", "value_bias"], "qkv.bias", self.size
        )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor, packing: Packing, *, causal: bool) -> Tensor:
        """``x [N, H]`` packed -> ``[N, H]``; causal (decoder) or key-padding masked (encoder)."""
        n, size = x.shape
        blocks = packing.to_blocks(self.qkv(x))  # [B, L, 3H]
        batch, length = blocks.shape[:2]
        q, k, v = blocks.view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if causal else packing.key_mask,
            dropout_p=self.dropout if self.training else 0.0, is_causal=causal,
        )  # [B, heads, L, d]
        return self.out(packing.from_blocks(out.transpose(1, 2)).reshape(n, size))

    def step(self, x: Tensor, cache: SelfCache) -> Tensor:
        """One decoding step: ``x [R, H]``, each row's new token; its key and value go into
        ``cache`` (in place, at the row's own position) and it attends to its row's tokens so
        far. Returns ``[R, H]``."""
        rows, size = x.shape
        q, k, v = self.qkv(x).view(rows, 3, self.heads, -1).unbind(1)  # [R, heads, d]
        keys, values, mask = cache.append(k, v)
        out = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=mask)
        return self.out(out.reshape(rows, size))


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder's tokens to the encoder's memory (keys without
    a bias, as in :class:`SelfAttention`)."""

    def __init__(self, size: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout, self.size = heads, dropout, size
        self.query = nn.Linear(size, size)
        self.key_value = _linear_with_zero_bias(size, 2 * size)
        _keys_without_bias(self.key_value, slice(0, size))
        self.out = nn.Linear(size, size)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _fuse_old_biases(state_dict, prefix, ["", "value_bias"], "key_value.bias", self.size)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def memory_blocks(self, memory: Tensor, packing: Packing) -> Tensor:
        """Keys and values of the packed memory ``[N_src, H]``: ``[2, B, heads, S, d]``."""
        blocks = packing.to_blocks(self.key_value(memory))  # [B, S, 2H], zeros at pads
        batch, length = blocks.shape[:2]
        return blocks.view(batch, length, 2, self.heads, -1).permute(2, 0, 3, 1, 4)

    def forward(self, x: Tensor, packing: Packing, memory: Tensor, key_mask: Tensor) -> Tensor:
        """``x [N_tgt, H]`` packed by ``packing``; ``memory`` from :meth:`memory_blocks`;
        ``key_mask [B, 1, 1, S]`` True at real source tokens. Returns ``[N_tgt, H]``."""
        n, size = x.shape
        query = packing.to_blocks(self.query(x))  # [B, T, H]
        query = query.view(*query.shape[:2], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            query, memory[0], memory[1], attn_mask=key_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(packing.from_blocks(out.transpose(1, 2)).reshape(n, size))

    def step(
        self, x: Tensor, memory: Tensor, key_mask: Tensor, *, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """One decoding step: ``x [R, H]`` -> ``(output [R, H], weights [R, heads, S] or None)``.

        ``memory [2, R, heads, S, d]``, ``key_mask [R, 1, 1, S]``.
        """
        rows, size = x.shape
        query = self.query(x).view(rows, self.heads, 1, -1)
        if need_weights:
            out, weights = attention_with_weights(query, memory[0], memory[1], key_mask)
            return self.out(out.reshape(rows, size)), weights[:, :, 0]
        out = F.scaled_dot_product_attention(query, memory[0], memory[1], attn_mask=key_mask)
        return self.out(out.reshape(rows, size)), None


ACTIVATION_FUNCTIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}  # gelu: erf's, exact


class FeedForward(nn.Module):
    """``Linear(H, F) -> activation -> dropout -> Linear(F, H)`` on packed rows."""

    def __init__(self, size: int, ffn_size: int, dropout: float,
                 activation: str = "relu") -> None:
        super().__init__()
        self.linear1 = nn.Linear(size, ffn_size)
        self.linear2 = nn.Linear(ffn_size, size)
        self.dropout = nn.Dropout(dropout)
        self.activation = ACTIVATION_FUNCTIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


def _residual(x: Tensor, sublayer: Callable[[Tensor], Tensor], norm: nn.LayerNorm,
              dropout: nn.Dropout, pre_norm: bool) -> Tensor:
    """A residual sub-layer: ``x + f(norm(x))`` (pre-norm) or ``norm(x + f(x))`` (post-norm)."""
    if pre_norm:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Self-attention, then feed-forward, each a residual sub-layer (pre- or post-norm)."""

    def __init__(self, size: int, heads: int, ffn_size: int, dropout: float, *,
                 pre_norm: bool = True, activation: str = "relu",
                 attention_dropout: float | None = None,
                 activation_dropout: float | None = None) -> None:
        super().__init__()
        attend = dropout if attention_dropout is None else attention_dropout
        active = dropout if activation_dropout is None else activation_dropout
        self.norm1, self.norm2 = nn.LayerNorm(size), nn.LayerNorm(size)
        self.self_attention = SelfAttention(size, heads, attend)
        self.feed_forward = FeedForward(size, ffn_size, active, activation)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, packing: Packing) -> Tensor:
        """``x [N, H]`` packed -> ``[N, H]``."""
        x = _residual(x, lambda h: self.self_attention(h, packing, causal=False), self.norm1,
                      self.dropout, self.pre_norm)
        return _residual(x, self.feed_forward, self.norm2, self.dropout, self.pre_norm)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, feed-forward, each a residual sub-layer."""

    def __init__(self, size: int, heads: int, ffn_size: int, dropout: float, *,
                 pre_norm: bool = True, activation: str = "relu",
                 attention_dropout: float | None = None,
                 activation_dropout: float | None = None) -> None:
        super().__init__()
        attend = dropout if attention_dropout is None else attention_dropout
        active = dropout if activation_dropout is None else activation_dropout
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(size) for _ in range(3))
        self.self_attention = SelfAttention(size, heads, attend)
        self.cross_attention = CrossAttention(size, heads, attend)
        self.feed_forward = FeedForward(size, ffn_size, active, activation)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, packing: Packing, memory: Tensor, key_mask: Tensor) -> Tensor:
        """``x [N_tgt, H]`` packed; ``memory`` from ``cross_attention.memory_blocks``."""
        drop, pre = self.dropout, self.pre_norm
        x = _residual(x, lambda h: self.self_attention(h, packing, causal=True), self.norm1,
                      drop, pre)
        x = _residual(x, lambda h: self.cross_attention(h, packing, memory, key_mask),
                      self.norm2, drop, pre)
        return _residual(x, self.feed_forward, self.norm3, drop, pre)

    def step(
        self, x: Tensor, cache: SelfCache, memory: Tensor, key_mask: Tensor, *, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """One decoding step of ``x [R, H]``: ``(output [R, H], weights or None)``; the new
        tokens' keys and values go into ``cache`` (see :meth:`SelfAttention.step`)."""
        drop, pre = self.dropout, self.pre_norm
        weights: list[Tensor | None] = []

        def attended(h: Tensor) -> Tensor:
            out, w = self.cross_attention.step(h, memory, key_mask, need_weights=need_weights)
            weights.append(w)
            return out

        x = _residual(x, lambda h: self.self_attention.step(h, cache), self.norm1, drop, pre)
        x = _residual(x, attended, self.norm2, drop, pre)
        return _residual(x, self.feed_forward, self.norm3, drop, pre), weights[0]
