"""int8 decoding: a quantized copy that decodes nearly as the float model, whose rows never
depend on each other, on a CPU only, never trained."""

from __future__ import annotations

import pytest
import torch

import padless.models.quantize as quantize_module
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.models import ModelConfig, build_model
from padless.models.decoding_setup import for_decoding
from padless.models.quantize import Int8Linear, quantize
from padless.runtime.errors import UserError

CONFIGS = {
    "gru": ModelConfig(embedding_size=32, hidden_size=32, num_layers=2, dropout=0.0),
    "transformer": ModelConfig(
        arch="transformer", embedding_size=32, hidden_size=32, num_heads=4, ffn_size=64, dropout=0.0
    ),
}
SOURCES = [[4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]]


@pytest.mark.parametrize("arch", CONFIGS)
def test_a_quantized_model_computes_nearly_the_same_in_int8(arch: str,
                                                            every_layer_int8) -> None:
    torch.manual_seed(0)
    model = build_model(CONFIGS[arch], 40).eval()
    quantized = quantize(model)
    assert quantized is not model and quantized.quantized.startswith("int8 (")
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())  # all swapped
    assert any(isinstance(m, Int8Linear) for m in quantized.modules())
    src = torch.tensor([[4, 8], [5, 9], [6, 0]])
    lengths = torch.tensor([3, 2])
    with torch.no_grad():
        want, _, _ = model.decode_step(torch.tensor([1, 1]), model.start_decoding(src, lengths))
        got, _, _ = quantized.decode_step(
            torch.tensor([1, 1]), quantized.start_decoding(src, lengths)
        )
    assert got.dtype == torch.float32
    assert (got.exp() - want.exp()).abs().max() < 0.02  # probabilities, to int8 rounding
    answers = decode_ids(quantized, SOURCES, SearchOptions(max_length=6))
    assert all(len(nbest[0].tokens) >= 1 for nbest in answers)


def test_a_quantized_model_refuses_to_train_and_other_devices_and_kinds(
        every_layer_int8) -> None:
    model = build_model(CONFIGS["gru"], 40).eval()
    quantized = quantize(model)
    with pytest.raises(UserError, match="quantized .* for decoding; training needs"):
        quantized.train()
    quantized.eval()  # evaluation mode is fine
    with pytest.raises(UserError, match="unknown quantization 'int4'; choose int8"):
        quantize(model, "int4")
    meta = build_model(CONFIGS["gru"], 40).to("meta")
    with pytest.raises(UserError, match="--quantize int8 decodes on a CPU only"):
        quantize(meta)
    with pytest.raises(UserError, match="leave --precision out"):
        for_decoding(model, "bf16", quantization="int8")
    decoding = for_decoding(model, "auto", quantization="int8")
    assert decoding.precision is None and decoding.describe().startswith("precision: int8")


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric int8 activations, per-output-feature int8 weights: rounded to
    integers in float32 as the layer does, then multiplied and scaled in float64."""
    tiny = torch.finfo(torch.float32).tiny
    w_scale = weight.abs().amax(1).clamp(min=tiny) / 127
    x_scale = x.abs().amax(1, keepdim=True).clamp(min=tiny) / 127
    qw, qx = torch.round(weight / w_scale[:, None]), torch.round(x / x_scale)
    assert qx.abs().max() <= 127 and qw.abs().max() <= 127
    return (qx.double() @ qw.double().t()) * x_scale.double() * w_scale.double() + bias.double()


def test_an_int8_linear_is_the_per_row_scheme_computed_exactly() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(37, 23)
    layer = Int8Linear(linear)
    x = torch.randn(11, 37) * torch.logspace(-3, 3, 11)[:, None]  # rows of any magnitude
    x[4] = 0.0  # a row of zeros: no division by a zero scale
    got = layer(x)
    assert got.dtype == torch.float32 and got.shape == (11, 23)
    torch.testing.assert_close(got.double(), _reference(x, linear.weight.detach(),
                                                        linear.bias.detach()),
                               rtol=1e-5, atol=1e-6)
    assert torch.equal(got[4], linear.bias.detach())
    assert (got - linear(x)).abs().max() / linear(x).abs().max() < 0.02  # near the float layer
    assert layer(x[None]).shape == (1, 11, 23) and layer(x[:0]).shape == (0, 23)
    torch.testing.assert_close(layer.weight, linear.weight.detach(), rtol=0.01, atol=0.01)


def test_an_int8_row_is_the_same_alone_and_beside_any_others() -> None:
    """Dynamic quantization scaled the whole batch at once: a loud neighbour changed a row."""
    torch.manual_seed(1)
    layer = Int8Linear(torch.nn.Linear(64, 300))
    rows = torch.randn(64, 64)
    rows[::5] *= 100.0  # loud rows beside quiet ones
    together = layer(rows)
    for i in (0, 1, 17, 63):
        assert torch.equal(layer(rows[i : i + 1])[0], together[i])
    assert torch.equal(layer(rows[:7]), together[:7])


def test_only_the_shapes_that_run_faster_in_int8_are_quantized(monkeypatch) -> None:
    """Timed once per shape (here: faked), never per batch: a 32 -> 40 layer is slower in
    int8 (the rescaling costs more than the small product saves), the others faster."""
    timed = []

    def fake_speedup(baseline, candidate, *, budget, rounds) -> float:
        baseline(), candidate()
        timed.append(1)
        return 0.8 if len(timed) == 1 else 1.5

    monkeypatch.setattr(quantize_module, "_faster", {})
    monkeypatch.setattr(quantize_module, "speedup", fake_speedup)
    assert not quantize_module.int8_pays(32, 40, 64)  # first shape timed: slower
    assert quantize_module.int8_pays(32, 64, 64)
    assert not quantize_module.int8_pays(32, 40, 64) and len(timed) == 2  # kept, not retimed
    model = build_model(CONFIGS["transformer"], 40).eval()
    quantized = quantize(model)
    swapped = {n for n, m in quantized.named_modules() if isinstance(m, Int8Linear)}
    kept = {n for n, m in quantized.named_modules() if type(m) is torch.nn.Linear}
    assert "output" in kept and swapped  # 32 -> 40: the output layer stays float32
    assert quantized.quantized == (f"int8 (per-row activations; {len(swapped)} of "
                                   f"{len(swapped) + len(kept)} linear layers)")
    decoding = for_decoding(model, "auto", quantization="int8")
    assert decoding.layout is not None  # the float output layer still gets its layout
