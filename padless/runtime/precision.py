"""The numeric precision a model runs in, chosen for the hardware at hand: :func:`choose_precision`.

``auto`` (the default everywhere) decides per device, when a command starts:

- **CPU**: bf16 only where it is native *and* faster at the model's sizes, else fp32. Many
  CPUs (AVX2 ones, most laptops) have no bf16 instructions; torch then emulates bf16
  matmuls, 38x slower than fp32 on a Zen 3 core. CPU flags do not settle it (a VM may hide
  them, ``ONEDNN_MAX_CPU_ISA`` may cap oneDNN below them), so the decision is measured: a
  small matmul in both precisions first (a few milliseconds even where bf16 is emulated),
  then, only if bf16 is not slower, the model's own matrix shapes (training: a linear
  layer's forward and backward under autocast; decoding: its forward with bf16 weights).
  bf16 must be :data:`MIN_SPEEDUP` times faster there: the rest of a step (softmax,
  dropout, norms, the optimiser) does not speed up, so a small gain in the matmuls is no
  gain at all (measured on a Xeon with AMX, ``benchmarks/RESULTS.md``: the model-size
  probe said 1.8-2.1x, whole training steps were 1.0-1.26x faster).
- **CUDA**: bf16 on GPUs that run it natively (compute capability 8.0 and later: A100,
  RTX 30xx, H100); fp16 with a gradient scaler on the older ones with fp16 tensor cores
  (7.x: V100, T4); fp32 otherwise.

An explicit ``bf16`` where it is emulated still runs, with one warning that gives the
measured slowdown; ``fp16`` on a CPU is an error. A run started elsewhere keeps its
precision where this machine runs it well and falls back to fp32, with a notice, where it
does not (``inherited=True``). Training runs under autocast (fp32 master weights, fp32 loss
and optimiser); decoding casts the weights (:meth:`Precision.dtype`).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from padless.runtime.errors import UserError
from padless.runtime.timing import speedup

__all__ = [
    "MIN_SPEEDUP", "PRECISIONS", "Precision", "Workload", "bf16_speedup", "choose_precision",
    "cpu_model", "hardware",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# bf16 must run the model's matrix shapes this many times faster than fp32 for auto to pick
# it on a CPU (the rest of a step does not speed up; see the module docstring)
MIN_SPEEDUP = 1.3
# below this, bf16 is emulated: the small first probe settles it without the model's shapes
_EMULATED = 0.5
_PROBE_SECONDS = 0.25  # time the model-size probe may take, both precisions together
_CAPS = (512, 1024, 4096)  # the probe's largest rows, width and output size
# below this many multiply-adds per layer, bf16 cannot pay for its casts: auto is fp32 without
# measuring (and a measurement of so little work would be noise)
_SMALL = 1 << 20


@dataclass(frozen=True)
class Workload:
    """The matrix shapes a model runs: ``rows`` tokens through a ``width -> out`` layer.

    ``training``: forward and backward under autocast (training, validation); otherwise a
    forward pass with the weights in the precision (decoding).
    """

    rows: int
    width: int
    out: int
    training: bool = True


@dataclass(frozen=True)
class Precision:
    """The precision chosen for one device, and why.

    Attributes:
        name: ``fp32``, ``bf16`` or ``fp16``.
        requested: what was asked for (``auto`` or one of the names).
        reason: why, in words (printed at start: ``precision: fp32 (...)``).
        hardware: the device it was chosen for (:func:`hardware`); a resumed run on the
            same hardware keeps the choice without measuring again.
        warning: something the user should know about the choice (an emulated bf16), or None.
    """

    name: str
    requested: str
    reason: str
    hardware: str
    warning: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def scaled(self) -> bool:
        """Whether training needs a gradient scaler (fp16 gradients underflow without one)."""
        return self.name == "fp16"

    def autocast(self, device: torch.device) -> torch.autocast:
        """Autocast to this precision on ``device`` (disabled for fp32)."""
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.name != "fp32")

    def describe(self) -> str:
        """``precision: NAME (reason)``, the line a command prints at start."""
        return f"precision: {self.name} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Precision | None:
        """The precision :meth:`to_dict` recorded, or None for anything else."""
        if not isinstance(data, dict):
            return None
        try:
            precision = cls(**data)
        except TypeError:
            return None
        if precision.name not in _DTYPES or precision.requested not in PRECISIONS:
            return None
        return precision


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or the platform's word for it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device: torch.device) -> str:
    """What a precision choice depends on: the GPU's name, or the CPU's model, torch's CPU
    capability and any cap on oneDNN's instruction set."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return device.type
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return (f"cpu: {cpu_model()}, {torch.backends.cpu.get_cpu_capability()}"
            + (f", ONEDNN_MAX_CPU_ISA={cap}" if cap else ""))


def _native_bf16_flags() -> bool | None:
    """Whether the CPU says it has bf16 instructions (x86 only; None: cannot tell)."""
    cpu = getattr(torch, "cpu", None)
    check = getattr(cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(cpu, "_is_amx_tile_supported", None)
    if check is None or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return bool(check() or (amx is not None and amx()))


def _linear(rows: int, width: int, out: int, dtype: torch.dtype, training: bool) -> Any:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=generator)
    w = torch.randn(out, width, generator=generator) * width ** -0.5
    if not training:
        x, w = x.to(dtype), w.to(dtype)
        return lambda: F.linear(x, w)
    w.requires_grad_(True)

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            y = F.linear(x, w)
        y.float().sum().backward()
        w.grad = None

    return step


def bf16_speedup(workload: Workload) -> float:
    """How many times faster bf16 runs ``workload``'s shapes than fp32 on this CPU (below 1:
    slower; where bf16 is emulated, only a small matmul is timed)."""
    with torch.no_grad():
        small = speedup(_linear(64, 256, 256, torch.float32, False),
                           _linear(64, 256, 256, torch.bfloat16, False), budget=0.05, rounds=3)
    if small < _EMULATED:
        return small
    rows, width, out = (min(v, cap) for v, cap in zip(
        (workload.rows, workload.width, workload.out), _CAPS, strict=True))
    shapes = (rows, width, out)
    with torch.enable_grad() if workload.training else torch.no_grad():
        return speedup(_linear(*shapes, torch.float32, workload.training),
                          _linear(*shapes, torch.bfloat16, workload.training),
                          budget=_PROBE_SECONDS, rounds=7)


def choose_precision(
    requested: str,
    device: torch.device,
    workload: Workload,
    *,
    inherited: bool = False,
    previous: Precision | None = None,
) -> Precision:
    """The precision to run ``workload`` in on ``device`` (see the module docstring).

    Args:
        requested: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        device: where the model runs.
        workload: its matrix shapes, for the CPU's measurement.
        inherited: ``requested`` comes from a run started elsewhere (a resumed run's config,
            a trained model): where this device runs it badly, fp32 instead, with a notice.
        previous: the choice this run made at its start; kept when nothing changed (same
            request and hardware), so a resumed run does not measure again.

    Raises:
        UserError: an unknown precision, or ``fp16`` asked for on a CPU.
    """
    if requested not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    where = hardware(device)
    if previous is not None and previous.requested == requested and previous.hardware == where:
        return previous
    if requested == "fp32":
        return Precision("fp32", requested, "as asked", where)
    if device.type == "cuda":
        return _choose_cuda(requested, device, where, inherited)
    if device.type != "cpu":
        if requested == "auto" or inherited:
            return Precision("fp32", requested, f"the default on {device.type}", where)
        return Precision(requested, requested, "as asked", where)
    return _choose_cpu(requested, workload, where, inherited)


def _choose_cpu(requested: str, workload: Workload, where: str, inherited: bool) -> Precision:
    if requested == "fp16":
        if inherited:
            return Precision("fp32", requested, "the run asked for fp16, which needs a CUDA "
                             "GPU: fp32 on this CPU", where)
        what = ("it trains with a gradient scaler" if workload.training
                else "torch has no fast fp16 kernels on a CPU")
        raise UserError(f"precision fp16 needs a CUDA GPU ({what}); on a CPU use auto, fp32 "
                        "or bf16")
    if workload.rows * workload.width * workload.out < _SMALL and requested == "auto":
        return Precision("fp32", requested, "a model this small gains nothing from bf16", where)
    gain = bf16_speedup(workload)
    flags = _native_bf16_flags()
    if gain < _EMULATED:
        why = ("this CPU has no native bf16" if flags is False
               else "bf16 is emulated on this CPU") + (
            f": a bf16 matmul ran {1 / gain:.0f}x slower than fp32")
        if requested == "auto":
            return Precision("fp32", requested, why, where)
        if inherited:
            return Precision("fp32", requested, f"the run asked for bf16, but {why}", where)
        return Precision("bf16", requested, "as asked", where, warning=(
            f"bf16 is emulated on this CPU: a bf16 matmul ran {1 / gain:.0f}x slower than "
            "fp32 here, so this will be slow; --precision auto picks the faster one"))
    if gain >= MIN_SPEEDUP:
        return Precision("bf16", requested, f"native on this CPU: {gain:.1f}x the fp32 "
                         "speed at this model's sizes", where)
    why = (f"bf16 is native on this CPU but only {gain:.2f}x the fp32 speed at this "
           f"model's sizes ({MIN_SPEEDUP:g}x needed)")
    if requested == "auto" or inherited:
        return Precision("fp32", requested, why, where)
    return Precision("bf16", requested, f"as asked ({why.split(' but ')[1]})", where)


def _choose_cuda(requested: str, device: torch.device, where: str, inherited: bool) -> Precision:
    major, minor = torch.cuda.get_device_capability(device)
    capability = f"compute capability {major}.{minor}"
    native_bf16 = major >= 8
    if requested == "fp16" or (requested == "auto" and not native_bf16 and major >= 7):
        why = "as asked" if requested == "fp16" else f"{capability}: no native bf16"
        return Precision("fp16", requested, f"{why}; with a gradient scaler", where)
    if requested == "auto":
        if native_bf16:
            return Precision("bf16", requested, f"native on this GPU ({capability})", where)
        return Precision("fp32", requested, f"{capability}: neither bf16 nor fp16 tensor "
                         "cores", where)
    if native_bf16:
        return Precision("bf16", requested, "as asked", where)
    if inherited:
        return Precision("fp32", requested, f"the run asked for bf16, which this GPU "
                         f"({capability}) emulates", where)
    return Precision("bf16", requested, "as asked", where, warning=(
        f"bf16 is emulated on this GPU ({capability}); --precision auto picks fp16 with a "
        "gradient scaler"))
