"""What machine a benchmark ran on, for its header and its RESULTS.md section.

Every figure in RESULTS.md is labelled with the CPU model, torch's CPU capability and
whether bf16 is native there, because the same code runs 38x apart on two CPUs (an
emulated bf16 matmul). The device is chosen as the commands choose it
(:func:`padless.runtime.devices.resolve_device`).
"""

from __future__ import annotations

import functools
import os
import platform
import time

import torch

from padless.runtime.devices import resolve_device
from padless.runtime.precision import Workload, bf16_speedup, cpu_model

__all__ = ["bf16_is_native", "bf16_native", "bf16_ratio", "choose_device", "machine"]


def choose_device(name: str = "auto") -> torch.device:
    """The device a ``--device`` option names, as the ``padless`` commands resolve it."""
    return resolve_device(name)


@functools.cache
def bf16_ratio() -> float:
    """How many times the fp32 speed a 256x512x512 bf16 matmul runs at on this CPU."""
    return bf16_speedup(Workload(rows=256, width=512, out=512, training=False))


def bf16_is_native() -> bool:
    """Whether bf16 runs natively here (emulated bf16 runs far below fp32's speed)."""
    return bf16_ratio() >= 0.5


def bf16_native() -> str:
    """Whether bf16 runs natively on this CPU, in words, with the measured matmul speedup."""
    verdict = "native" if bf16_is_native() else "emulated"
    return f"bf16 {verdict} (a 256x512x512 bf16 matmul ran {bf16_ratio():.2f}x the fp32 speed)"


def machine(device: torch.device | None = None) -> str:
    """CPU model, cores, torch's CPU capability, bf16, torch version and threads (and the
    GPU, when ``device`` is one)."""
    text = (f"{cpu_model()}, {os.cpu_count()} cores, "
            f"torch.backends.cpu.get_cpu_capability() {torch.backends.cpu.get_cpu_capability()}, "
            f"{bf16_native()}, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s), Python {platform.python_version()}")
    if cap := os.environ.get("ONEDNN_MAX_CPU_ISA"):
        text += f", ONEDNN_MAX_CPU_ISA={cap}"
    if device is not None and device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        text += f"; GPU {torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    return text


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = 2048) -> float:
    """Best-of-5 square matmul rate in GFLOP/s: the machine's attainable peak.

    The side doubles from 256 up to ``size`` while one product takes under 0.1 s, so that
    an emulated dtype (bf16 on a CPU without it runs some 40x below fp32) costs seconds, not
    the many minutes a 2048^3 product would take there."""
    side = 256
    while True:
        a = torch.randn(side, side, device=device).to(dtype)
        b = torch.randn(side, side, device=device).to(dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            torch.mm(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        if side >= size or best > 0.1:
            return 2 * side**3 / best / 1e9
        side *= 2
