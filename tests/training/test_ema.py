"""The moving average of the weights: the formula, swapping it in and out, saving it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from padless.training.ema import EMA


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()


def test_the_average_follows_the_warmed_up_recursion() -> None:
    model = small_model()
    average = EMA(model, decay=0.9)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update()
        decay = min(0.9, (1 + n) / (10 + n))  # 0.1, 0.18, ... then 0.9 from n = 80 / 8 on
        for name, value in model.state_dict().items():
            reference[name] = decay * reference[name] + (1 - decay) * value
    got = average.state_dict()
    assert got.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(got[name], reference[name], rtol=1e-12, atol=1e-12)
    assert not torch.equal(got["0.weight"], model.state_dict()["0.weight"])


def test_applied_swaps_the_average_in_and_the_weights_back() -> None:
    model = small_model()
    average = EMA(model, decay=0.5)
    with torch.no_grad():
        model[2].weight.add_(torch.randn_like(model[2].weight))
    average.update()
    own = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 3, dtype=torch.float64)
    with average.applied():
        inside = model(x)
        for name, value in average.state_dict().items():
            assert torch.equal(model.state_dict()[name], value)
    assert not torch.allclose(inside, model(x))
    for name, value in model.state_dict().items():
        assert torch.equal(value, own[name]), name


def test_applied_restores_the_weights_after_an_error() -> None:
    model = small_model()
    average = EMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    own = model[0].weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), average.applied():
        raise RuntimeError("boom")
    assert torch.equal(model[0].weight, own)


def test_a_saved_average_carries_on() -> None:
    model = small_model()
    first = EMA(model, decay=0.8)
    for _ in range(3):
        with torch.no_grad():
            model[2].bias.add_(1.0)
        first.update()
    resumed = EMA(model, decay=0.8, updates=3, saved=first.state_dict())
    for average in (first, resumed):
        with torch.no_grad():
            model[2].bias.add_(1.0)
        average.update()
        with torch.no_grad():
            model[2].bias.sub_(1.0)  # both averages see the same weights
    torch.testing.assert_close(resumed.state_dict()["2.bias"], first.state_dict()["2.bias"])
    with pytest.raises(ValueError, match="lack"):
        EMA(model, decay=0.8, saved={"0.weight": model[0].weight})
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(model, decay=1.0)
