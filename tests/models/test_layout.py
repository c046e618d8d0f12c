"""The output layer's weight layout for decoding: taken column-major only where measured
faster, the same values and the same answers, the tied embedding left as it was."""

from __future__ import annotations

import pytest
import torch

import padless.models.layout as layout
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.models import ModelConfig, build_model
from padless.models.decoding_setup import for_decoding

CONFIGS = {
    "gru": ModelConfig(embedding_size=32, hidden_size=32, num_layers=2, dropout=0.0),
    "transformer": ModelConfig(
        arch="transformer", embedding_size=32, hidden_size=32, num_heads=4, ffn_size=64,
        dropout=0.0, tie_output=True,
    ),
}
SOURCES = [[4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]]


def measured_as(monkeypatch: pytest.MonkeyPatch, gains: dict[int, float]) -> None:
    monkeypatch.setattr(layout, "_speedup", lambda weight, bias, rows: gains[rows])


@pytest.mark.parametrize("arch", CONFIGS)
def test_column_major_where_faster_keeps_values_answers_and_the_embedding(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = build_model(CONFIGS[arch], 40).eval()
    embedding = model.tgt_embedding.weight if arch == "transformer" else None
    if embedding is not None:
        assert model.output.weight is embedding  # tied
    before = model.output.weight.detach().clone()
    want = decode_ids(model, SOURCES, SearchOptions(max_length=6))
    measured_as(monkeypatch, {1: 2.5, 64: 1.0})
    decoding = for_decoding(model, "fp32")
    weight = model.output.weight
    assert decoding.layout.name == "column-major"
    assert weight.stride() == (1, weight.shape[0]) and torch.equal(weight, before)
    assert "output layer column-major: 2.5x the row-major speed at 1 row, 1.0x at 64 rows" in (
        decoding.describe())
    if embedding is not None:  # untied for decoding; the lookup stays row-major and unchanged
        assert model.tgt_embedding.weight is embedding and embedding.is_contiguous()
        assert torch.equal(embedding, before)
    got = decode_ids(model, SOURCES, SearchOptions(max_length=6))
    assert [h[0].tokens for h in got] == [h[0].tokens for h in want]
    for g, w in zip(got, want, strict=True):
        assert g[0].score == pytest.approx(w[0].score, abs=1e-4)
    assert set(model.state_dict()) == set(build_model(CONFIGS[arch], 40).state_dict())


@pytest.mark.parametrize("gains", [{1: 1.05, 64: 1.05}, {1: 3.0, 64: 0.9}, {1: 0.8, 64: 1.5}])
def test_row_major_unless_faster_at_one_count_and_not_slower_at_the_other(
    gains: dict[int, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_model(CONFIGS["gru"], 40).eval()
    weight = model.output.weight
    measured_as(monkeypatch, gains)
    decoding = for_decoding(model, "fp32")
    assert decoding.layout.name == "row-major" and decoding.layout.speedups == gains
    assert model.output.weight is weight and weight.is_contiguous()
    assert "output layer" not in decoding.describe()


def test_the_measurement_is_taken_once_per_shape_and_decides_either_way() -> None:
    model = build_model(CONFIGS["gru"], 40).eval()
    chosen = layout.lay_out_output(model, rows=4)
    assert chosen.name in ("row-major", "column-major") and set(chosen.speedups) == {1, 4}
    assert all(ratio > 0 for ratio in chosen.speedups.values())
    again = layout.lay_out_output(build_model(CONFIGS["gru"], 40).eval(), rows=4)
    assert again.speedups == chosen.speedups  # remembered, not measured again


def test_a_quantized_output_layer_has_no_layout(monkeypatch: pytest.MonkeyPatch,
                                                every_layer_int8) -> None:
    monkeypatch.setattr(layout, "_speedup", lambda *a: pytest.fail("measured"))
    decoding = for_decoding(build_model(CONFIGS["gru"], 40).eval(), "auto",
                            quantization="int8")
    assert decoding.layout is None
