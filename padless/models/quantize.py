"""int8 decoding on a CPU: :func:`quantize`, a copy of a trained model whose linear layers
compute in int8 where that is faster here.

An ``nn.Linear`` becomes an :class:`Int8Linear`: its weight stored once in int8, one scale
per output feature; each call quantizes its input one row (one token) at a time, with that
row's own scale, multiplies in int8 with int32 sums (``torch._int_mm``: oneDNN's VNNI and AMX
kernels on x86), and returns float32. This is the scheme of torchao's
``Int8DynamicActivationInt8Weight`` and of CTranslate2. A row's scale and its integer sums
depend on that row alone, so an answer never depends on its batch-mates (PyTorch's
``quantize_dynamic``, which padless used before, scaled the whole batch tensor at once: 58
of 256 greedy answers changed between batches of 1 and of 64). Embeddings, norms,
attention's softmax, GRU cells and the log-softmax stay in float32. Only for decoding: a
quantized model refuses ``train()``.

Whether int8 pays depends on the layer's shape and the CPU: the quantize-and-rescale around
the int8 product costs more than a small float32 matmul saves (a 256x256 layer at 64 rows
ran 0.7x float32's speed on an Ice Lake Xeon, the 256x8000 output layer 1.6x). So each
distinct shape is timed once per process, int8 against float32, at the rows of a decoding
batch and at one row together, and only the shapes that run faster in int8 are quantized:
chosen once per model, never per batch.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from padless.models.base import EncoderDecoder
from padless.runtime.errors import UserError
from padless.runtime.timing import speedup

__all__ = ["QUANTIZATIONS", "Int8Linear", "int8_pays", "quantize"]

QUANTIZATIONS = ("int8",)
_LEVELS = 127.0  # symmetric int8: -127..127 (-128 unused, so a sign flip never overflows)
_PROBE_SECONDS = 0.15  # per shape, int8 and float32 together
_PROBE_OUT = 8192  # wider layers are timed at this width: their speed per output is the same
_faster: dict[tuple[int, int, int], bool] = {}  # (rows, in, out) -> int8 runs faster


class Int8Linear(nn.Module):
    """``nn.Linear`` in int8, rows quantized one by one: ``[..., in] -> [..., out]``.

    Args:
        linear: the float layer (its weight ``[out, in]`` and bias are copied, quantized
            per output feature).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / _LEVELS
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # [in, out] column-major (the [out, in] rows, transposed): _int_mm ran it 2.2-2.6x
        # as fast as a row-major copy at 1 row on an Ice Lake Xeon, and 0.8-1.2x at 64
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).to(torch.int8).t())
        self.register_buffer("scale", scale)  # [out]
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    @property
    def weight(self) -> Tensor:
        """The weight as float32 ``[out, in]``, rebuilt from int8 (for code that reads a
        layer's weight, e.g. Luong's general attention)."""
        return self.qweight.t().float() * self.scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()
        if rows.shape[0] == 0:
            return rows.new_zeros(*x.shape[:-1], self.out_features)
        # scale per row: the max |x| of the row, so every row uses the whole int8 range
        row_scale = rows.abs().amax(dim=1, keepdim=True).clamp_(
            min=torch.finfo(torch.float32).tiny).div_(_LEVELS)
        quantized = torch.round(rows / row_scale).to(torch.int8)
        # exact int32 sums: no float rounding that could depend on the row count
        sums = torch._int_mm(quantized, self.qweight)
        scale = row_scale * self.scale  # [rows, out]
        out = (torch.addcmul(self.bias, sums, scale) if self.bias is not None
               else sums * scale)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


def int8_pays(width: int, out: int, rows: int) -> bool:
    """Whether an ``[width -> out]`` layer runs faster as an :class:`Int8Linear` than in
    float32 on this CPU, at ``rows`` rows and at one row together (timed alternately, once
    per process and shape)."""
    key = (rows, width, min(out, _PROBE_OUT))
    if key not in _faster:
        generator = torch.Generator().manual_seed(0)
        linear = nn.Linear(width, key[2])
        int8 = Int8Linear(linear)
        inputs = [torch.randn(n, width, generator=generator) for n in sorted({1, rows})]
        with torch.no_grad():
            _faster[key] = speedup(lambda: [linear(x) for x in inputs],
                                   lambda: [int8(x) for x in inputs],
                                   budget=_PROBE_SECONDS, rounds=9) > 1.0
    return _faster[key]


def _swap_linears(module: nn.Module, rows: int) -> int:
    swapped = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            if int8_pays(child.in_features, child.out_features, rows):
                setattr(module, name, Int8Linear(child))
                swapped += 1
        else:
            swapped += _swap_linears(child, rows)
    return swapped


def quantize(model: EncoderDecoder, kind: str = "int8", rows: int = 64) -> EncoderDecoder:
    """A copy of ``model`` (on the CPU) whose linear layers compute in int8, activations
    quantized per row (:class:`Int8Linear`), where that runs faster here at ``rows`` rows
    and at one (:func:`int8_pays`).

    Raises:
        UserError: an unknown kind, or a model on another device than the CPU.
    """
    if kind not in QUANTIZATIONS:
        raise UserError(
            f"--quantize: unknown quantization {kind!r}; choose {', '.join(QUANTIZATIONS)}"
        )
    if model.device.type != "cpu":
        raise UserError(
            f"--quantize {kind} decodes on a CPU only (its int8 kernels are the CPU's); add "
            "--device cpu, or leave --quantize out on the GPU"
        )
    quantized = copy.deepcopy(model).float().eval()
    swapped = _swap_linears(quantized, rows)
    total = sum(type(m) in (nn.Linear, Int8Linear) for m in quantized.modules())
    quantized.quantized = f"int8 (per-row activations; {swapped} of {total} linear layers)"
    return quantized
