"""int8 decoding: a quantized copy that decodes nearly as the float model, on a CPU only,
never trained."""

from __future__ import annotations

import pytest
import torch

from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.models import ModelConfig, build_model
from padless.models.precision import for_decoding
from padless.models.quantize import quantize
from padless.runtime.errors import UserError

CONFIGS = {
    "gru": ModelConfig(embedding_size=32, hidden_size=32, num_layers=2, dropout=0.0),
    "transformer": ModelConfig(
        arch="transformer", embedding_size=32, hidden_size=32, num_heads=4, ffn_size=64, dropout=0.0
    ),
}
SOURCES = [[4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]]


@pytest.mark.parametrize("arch", CONFIGS)
def test_a_quantized_model_computes_nearly_the_same_in_int8(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(CONFIGS[arch], 40).eval()
    quantized = quantize(model)
    assert quantized is not model and quantized.quantized.startswith("int8 (")
    kinds = {type(m).__module__ for m in quantized.modules()}
    assert any("quantized" in kind for kind in kinds)  # the linear layers were swapped
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


def test_a_quantized_model_refuses_to_train_and_other_devices_and_kinds() -> None:
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
