"""The output layer's weight in the memory layout this CPU multiplies fastest:
:func:`lay_out_output`.

A decoding step's largest matmul is the output layer, ``[R, H] @ W^T`` with ``W [V, H]``
(``nn.Linear``'s row-major weight). The BLAS behind it picks a kernel by shape and layout,
and for the few rows of a decoding step the kernels differ a lot by CPU: on an AMD EPYC
(Zen 4) with torch's MKL, one row against ``W`` stored column-major (``W^T`` contiguous) ran
2.3-5x faster than against the row-major ``W``, and 64 rows about 1.1x
(benchmarks/RESULTS.md, "Output layer layout"). Elsewhere it may be even, or the other way.
So it is measured, on the model's own weight, at one row (a lone sentence, a server's lone
request) and at the rows a command decodes at once, and the column-major copy is taken only
where it is faster at one of them and not slower at the other.

The copy is a new parameter of the same values (``W^T.contiguous().t()``): the same
``nn.Linear``, the same state-dict keys, bit-identical logits up to the kernel's summation
order. A tied output layer (the Transformer's) is untied from its embedding for decoding,
since an embedding lookup in the column-major layout gathers strided rows (10x slower). Only
for decoding (:func:`padless.models.decoding_setup.for_decoding`); on CUDA the layout stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from padless.models.base import EncoderDecoder
from padless.runtime.timing import speedup

__all__ = ["MIN_GAIN", "OutputLayout", "column_major", "lay_out_output"]

MIN_GAIN = 1.1  # the column-major copy must be this much faster at one of the row counts ...
_MAX_LOSS = 0.95  # ... and at least this fast (relative) at the other
_PROBE_SECONDS = 0.15  # per row count, both layouts together
_measured: dict[tuple[int, int, int, torch.dtype], float] = {}


@dataclass(frozen=True)
class OutputLayout:
    """The layout chosen for the output layer's weight, and why.

    Attributes:
        name: ``row-major`` (``nn.Linear``'s own) or ``column-major``.
        speedups: rows -> how many times faster column-major ran than row-major (measured;
            empty where nothing was measured).
    """

    name: str
    speedups: dict[int, float]

    def describe(self) -> str:
        """``output layer column-major: 2.9x the row-major speed at 1 row, 1.1x at 64``; ''
        when row-major."""
        if self.name == "row-major":
            return ""
        ratios = ", ".join(f"{ratio:.1f}x" + (" the row-major speed" if i == 0 else "")
                           + f" at {rows} row{'s' if rows > 1 else ''}"
                           for i, (rows, ratio) in enumerate(self.speedups.items()))
        return f"output layer column-major: {ratios}"


def column_major(weight: torch.Tensor) -> torch.Tensor:
    """The values of ``weight [V, H]``, stored as ``[H, V]`` contiguous (strides ``(1, V)``)."""
    return weight.detach().t().contiguous().t()


def _speedup(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> float:
    key = (rows, *weight.shape, weight.dtype)
    if key not in _measured:
        x = torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(0))
        x = x.to(weight.dtype)
        column = column_major(weight)
        with torch.no_grad():
            _measured[key] = speedup(
                lambda: torch.nn.functional.linear(x, weight, bias),
                lambda: torch.nn.functional.linear(x, column, bias),
                budget=_PROBE_SECONDS, rounds=7)
    return _measured[key]


def lay_out_output(model: EncoderDecoder, rows: int) -> OutputLayout:
    """Store ``model.output``'s weight column-major if that decodes faster here (see the module
    docstring), measured at 1 and ``rows`` rows; once per process and shape."""
    weight = model.output.weight
    if weight.device.type != "cpu":
        return OutputLayout("row-major", {})
    gains = {n: _speedup(weight, model.output.bias, n) for n in sorted({1, max(1, rows)})}
    if max(gains.values()) < MIN_GAIN or min(gains.values()) < _MAX_LOSS:
        return OutputLayout("row-major", gains)
    model.output.weight = nn.Parameter(column_major(weight), requires_grad=weight.requires_grad)
    return OutputLayout("column-major", gains)
