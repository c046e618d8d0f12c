"""int8 decoding on a CPU: :func:`quantize`, a copy of a trained model whose linear layers
(and GRUs) compute in int8.

Dynamic quantization (PyTorch's ``torch.ao.quantization.quantize_dynamic``; torchao's
``quantize_`` is its successor, and torch 2.13, which padless pins, still has it): the
weights are stored in int8 once, each call quantizes its input, multiplies in int8 and
returns float32, so nothing needs calibrating and embeddings, norms, attention and the
log-softmax stay in float32. Only for decoding: a quantized model refuses ``train()``.

PyTorch has several int8 backends and which is fastest depends on the CPU (oneDNN uses the
AMX and VNNI int8 units where they exist; FBGEMM is the fallback of the others), so the
engine is measured once per process on the model's own linear shapes, like the precision.
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from torch import nn

from padless.models.base import EncoderDecoder
from padless.runtime.errors import UserError
from padless.runtime.timing import speedup

__all__ = ["QUANTIZATIONS", "quantize"]

QUANTIZATIONS = ("int8",)
_ENGINES = ("onednn", "fbgemm")  # x86 is a heuristic between these two: measure them instead
_PROBE_SECONDS = 0.5  # the engines' timing, both together
_chosen: dict[tuple[int, tuple[tuple[int, int], ...]], str] = {}  # (rows, shapes) -> engine


def _dynamic(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # its deprecation notice points users to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear, nn.GRU}, dtype=torch.qint8)


def _engine(rows: int, shapes: tuple[tuple[int, int], ...]) -> str:
    """The supported int8 engine that runs layers of ``shapes`` (``(width, out)`` each, one
    layer a shape) fastest, all together, at ``rows`` rows and at the fewer rows a decoding
    batch of ``rows`` goes down to as its sentences end (halving to 1: on an AMD EPYC oneDNN
    won at 64 rows and more, FBGEMM below, and FBGEMM decoded a batch of 64 1.2x faster).
    Timed alternately (a quantized layer runs whatever the engine setting), so a slow moment
    of the machine falls on both."""
    key = (rows, shapes)
    if key not in _chosen:
        engines = [e for e in _ENGINES if e in torch.backends.quantized.supported_engines]
        if len(engines) < 2:
            _chosen[key] = engines[0] if engines else "none"
            return _chosen[key]
        counts = sorted({max(1, rows >> k) for k in range(rows.bit_length())})
        inputs = {(n, w): torch.randn(n, w) for n in counts for w, _ in shapes}
        runs = {}
        for engine in engines:
            torch.backends.quantized.engine = engine
            layers = [(_dynamic(nn.Sequential(nn.Linear(w, o))), w) for w, o in shapes]
            runs[engine] = partial(_run, [(layer, inputs[n, w]) for layer, w in layers
                                          for n in counts])
        first, second = engines
        faster = speedup(runs[first], runs[second], budget=_PROBE_SECONDS, rounds=9)
        _chosen[key] = second if faster > 1.0 else first
    return _chosen[key]


def _run(layers: list[tuple[nn.Module, torch.Tensor]]) -> None:
    for layer, x in layers:
        layer(x)


def _shapes(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """The distinct ``(in, out)`` shapes of ``model``'s linear layers (the output layer's
    capped at 8,192 outputs: its kernels' speed per output is what matters)."""
    shapes = {(m.in_features, min(m.out_features, 8192)) for m in model.modules()
              if isinstance(m, nn.Linear)}
    return tuple(sorted(shapes))


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
    # every linear shape counts: the engines tie on the output layer on some CPUs (AMD
    # EPYC: FBGEMM and oneDNN alike there) and differ 2x on the smaller ones
    engine = _engine(max(1, rows), _shapes(model))
    if engine == "none":
        raise UserError(
            "--quantize int8: this build of PyTorch has no int8 engine (fbgemm or onednn)"
        )
    torch.backends.quantized.engine = engine
    quantized = _dynamic(model.float().eval())
    quantized.quantized = f"int8 ({engine})"
    return quantized.eval()
