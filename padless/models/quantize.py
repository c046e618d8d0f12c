"""int8 decoding on a CPU: :func:`quantize`, a copy of a trained model whose linear layers
(and GRUs) compute in int8.

Dynamic quantization (PyTorch's ``torch.ao.quantization.quantize_dynamic``; torchao's
``quantize_`` is its successor, and torch 2.13, which padless pins, still has it): the
weights are stored in int8 once, each call quantizes its input, multiplies in int8 and
returns float32, so nothing needs calibrating and embeddings, norms, attention and the
log-softmax stay in float32. Only for decoding: a quantized model refuses ``train()``.

PyTorch has several int8 backends and which is fastest depends on the CPU (oneDNN uses the
AMX and VNNI int8 units where they exist; FBGEMM is the fallback of the others), so the
engine is measured once per process on the model's output layer (the largest a decoding step
runs), like the precision.
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from torch import nn

from padless.models.base import EncoderDecoder
from padless.runtime.errors import UserError

__all__ = ["QUANTIZATIONS", "quantize"]

QUANTIZATIONS = ("int8",)
_ENGINES = ("onednn", "fbgemm")  # x86 is a heuristic between these two: measure them instead
_chosen: dict[tuple[int, int, int], str] = {}


def _dynamic(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # its deprecation notice points users to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear, nn.GRU}, dtype=torch.qint8)


def _engine(rows: int, width: int, out: int) -> str:
    """The supported int8 engine that runs a ``width -> out`` layer on ``rows`` rows fastest."""
    key = (rows, width, out)
    if key not in _chosen:
        engines = [e for e in _ENGINES if e in torch.backends.quantized.supported_engines]
        x = torch.randn(rows, width)
        times = {}
        for engine in engines:
            torch.backends.quantized.engine = engine
            layer = _dynamic(nn.Sequential(nn.Linear(width, out)))
            layer(x)  # the first call packs and picks kernels
            spent = []
            for _ in range(5):
                tick = time.perf_counter()
                layer(x)
                spent.append(time.perf_counter() - tick)
            times[engine] = statistics.median(spent)
        _chosen[key] = min(times, key=times.get) if times else "none"
    return _chosen[key]


def quantize(model: EncoderDecoder, kind: str = "int8", rows: int = 1) -> EncoderDecoder:
    """A copy of ``model`` (on the CPU) whose linear layers and GRUs compute in int8, with
    the int8 engine measured fastest for its shapes at ``rows`` sentences at a time.

    Raises:
        UserError: an unknown kind, a model on another device than the CPU (PyTorch has no
            CUDA kernels for it), or no int8 engine in this build of PyTorch.
    """
    if kind not in QUANTIZATIONS:
        raise UserError(
            f"--quantize: unknown quantization {kind!r}; choose {', '.join(QUANTIZATIONS)}"
        )
    if model.device.type != "cpu":
        raise UserError(
            f"--quantize {kind} decodes on a CPU only (PyTorch's int8 dynamic "
            f"quantization has no kernels for {model.device.type}); add "
            "--device cpu, or leave --quantize out on the GPU"
        )
    # the output layer is the largest a decoding step runs: its shape decides
    engine = _engine(max(1, rows), model.config.hidden_size, min(model.vocab_size, 8192))
    if engine == "none":
        raise UserError(
            "--quantize int8: this build of PyTorch has no int8 engine (fbgemm or onednn)"
        )
    torch.backends.quantized.engine = engine
    quantized = _dynamic(model.float().eval())
    quantized.quantized = f"int8 ({engine})"
    return quantized.eval()
