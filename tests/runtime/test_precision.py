"""Precision chosen for the hardware: the CPU's measured bf16 speed, the GPU's capability."""

from __future__ import annotations

import math

import pytest
import torch

from padless.runtime import precision as module
from padless.runtime.errors import UserError
from padless.runtime.precision import (
    MIN_SPEEDUP,
    Precision,
    Workload,
    bf16_speedup,
    choose_precision,
    hardware,
)

CPU = torch.device("cpu")
WORK = Workload(rows=512, width=256, out=1024, training=True)  # large enough to measure


@pytest.fixture
def speedup(monkeypatch: pytest.MonkeyPatch):
    """Fake the CPU's measured bf16 speedup; returns a setter."""
    def use(value: float) -> None:
        monkeypatch.setattr(module, "bf16_speedup", lambda workload: value)
    return use


def test_auto_on_a_cpu_that_emulates_bf16_is_fp32_and_says_how_much_slower(speedup) -> None:
    speedup(1 / 38)
    chosen = choose_precision("auto", CPU, WORK)
    assert chosen.name == "fp32" and chosen.warning is None
    assert "38x slower" in chosen.describe() and chosen.describe().startswith("precision: fp32 (")


def test_auto_picks_bf16_only_where_it_is_clearly_faster(speedup) -> None:
    speedup(MIN_SPEEDUP + 0.5)
    assert choose_precision("auto", CPU, WORK).name == "bf16"
    speedup(MIN_SPEEDUP - 0.5)  # native, but not worth it at this model's sizes
    chosen = choose_precision("auto", CPU, WORK)
    assert chosen.name == "fp32" and f"{MIN_SPEEDUP - 0.5:.2f}x" in chosen.reason


def test_an_explicit_emulated_bf16_runs_with_one_warning(speedup) -> None:
    speedup(1 / 38)
    chosen = choose_precision("bf16", CPU, WORK)
    assert chosen.name == "bf16" and "38x slower" in chosen.warning


def test_an_inherited_precision_falls_back_to_fp32_where_it_runs_badly(speedup) -> None:
    speedup(1 / 38)
    chosen = choose_precision("bf16", CPU, WORK, inherited=True)
    assert chosen.name == "fp32" and "asked for bf16" in chosen.reason and chosen.warning is None
    chosen = choose_precision("fp16", CPU, WORK, inherited=True)  # a GPU run on a CPU
    assert chosen.name == "fp32" and "CUDA" in chosen.reason


def test_fp16_on_a_cpu_and_unknown_precisions_are_one_line_errors() -> None:
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", CPU, WORK)
    with pytest.raises(UserError, match="auto, fp32, bf16, fp16"):
        choose_precision("half", CPU, WORK)


def test_fp32_and_tiny_models_are_never_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A measurement of a tiny model's matmuls would be noise: auto is fp32 there."""
    monkeypatch.setattr(module, "bf16_speedup", lambda workload: pytest.fail("measured"))
    assert choose_precision("fp32", CPU, WORK).name == "fp32"
    tiny = choose_precision("auto", CPU, Workload(rows=8, width=32, out=16, training=False))
    assert tiny.name == "fp32" and "small" in tiny.reason


def test_a_resumed_run_keeps_its_choice_on_the_same_hardware(monkeypatch, speedup) -> None:
    speedup(MIN_SPEEDUP + 1)
    first = choose_precision("auto", CPU, WORK)
    monkeypatch.setattr(module, "bf16_speedup", lambda workload: pytest.fail("measured"))
    assert choose_precision("auto", CPU, WORK, previous=first) is first
    moved = Precision(first.name, first.requested, first.reason, "cpu: another machine")
    speedup(0.1)  # the other hardware: measured again
    assert choose_precision("auto", CPU, WORK, previous=moved).name == "fp32"


@pytest.mark.parametrize(("capability", "auto", "explicit_bf16_warns"), [
    ((9, 0), "bf16", False),  # H100
    ((8, 0), "bf16", False),  # A100
    ((7, 5), "fp16", True),  # T4
    ((7, 0), "fp16", True),  # V100
    ((6, 1), "fp32", True),  # GTX 1080
])
def test_cuda_by_compute_capability(monkeypatch, capability, auto, explicit_bf16_warns) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    gpu = torch.device("cuda", 0)
    chosen = choose_precision("auto", gpu, WORK)
    assert chosen.name == auto and chosen.hardware == "cuda: a GPU"
    assert chosen.scaled == (auto == "fp16")
    assert choose_precision("fp16", gpu, WORK).scaled
    assert (choose_precision("bf16", gpu, WORK).warning is not None) == explicit_bf16_warns
    inherited = choose_precision("bf16", gpu, WORK, inherited=True).name
    assert inherited == ("fp32" if explicit_bf16_warns else "bf16")


def test_the_record_round_trips_and_rejects_garbage(speedup) -> None:
    speedup(1 / 38)
    chosen = choose_precision("auto", CPU, WORK)
    assert Precision.from_dict(chosen.to_dict()) == chosen
    for garbage in (None, "fp32", {"name": "fp8", "requested": "auto", "reason": "",
                                   "hardware": ""}, {"name": "fp32"}):
        assert Precision.from_dict(garbage) is None


def test_the_real_probe_measures_a_ratio_on_this_cpu() -> None:
    ratio = bf16_speedup(Workload(rows=32, width=64, out=64, training=True))
    assert math.isfinite(ratio) and ratio > 0
    assert hardware(CPU).startswith("cpu: ")
    chosen = choose_precision("auto", CPU, Workload(rows=64, width=256, out=256,
                                                    training=False))
    assert chosen.name in ("fp32", "bf16") and chosen.hardware == hardware(CPU)


def test_autocast_follows_the_choice() -> None:
    bf16 = Precision("bf16", "bf16", "as asked", "test")
    with bf16.autocast(CPU):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with Precision("fp32", "fp32", "as asked", "test").autocast(CPU):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
