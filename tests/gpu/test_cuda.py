"""On a CUDA GPU (skipped without one; ``tests/gpu/gpu_check.sh`` runs them): both bundled
configs train under ``auto`` and under fp16 with a gradient scaler, resume exactly, decode a
batch as they decode one sentence at a time, and serve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from padless.data.dataset import PreparedData
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.runs.checkpoint import Checkpoint
from padless.runs.loading import load_model
from padless.training.config import load_config
from padless.training.trainer import train

pytestmark = pytest.mark.cuda

# each bundled config, shrunk so a step takes milliseconds; its architecture and schedule kept
SMALL = {
    "chatbot": ["model.embedding_size=32", "model.hidden_size=32"],
    "transformer": ["model.embedding_size=32", "model.hidden_size=32", "model.ffn_size=64"],
}


def config(name: str, *extra: str):
    return load_config(name, [*SMALL[name], "train.device=cuda", "train.max_tokens=256",
                              "train.valid_every=3", "train.keep_best=0", *extra])


@pytest.fixture(autouse=True)
def deterministic():
    """Bit-exact resume needs deterministic kernels (cuBLAS's workspace is set in gpu_check.sh)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("precision", ["auto", "fp16"])
@pytest.mark.parametrize("name", ["chatbot", "transformer"])
def test_both_configs_train_and_resume_exactly(
    name: str, precision: str, reversal_data: PreparedData, tmp_path: Path
) -> None:
    data = (reversal_data.text, reversal_data.splits)
    result = train(config(name, f"train.precision={precision}", "train.max_steps=6"), *data,
                   tmp_path / "whole")
    assert result.step == 6 and result.best_valid_loss is not None
    whole = Checkpoint.load(tmp_path / "whole" / "latest.pt")
    assert (whole.scaler is not None) == (precision == "fp16")
    train(config(name, f"train.precision={precision}", "train.max_steps=4"), *data,
          tmp_path / "split")
    train(config(name, f"train.precision={precision}", "train.max_steps=6"), *data,
          tmp_path / "split", resume=True)
    resumed = Checkpoint.load(tmp_path / "split" / "latest.pt")
    for key in whole.weights:
        assert torch.equal(whole.weights[key], resumed.weights[key]), key


@pytest.mark.parametrize("name", ["chatbot", "transformer"])
def test_a_batch_decodes_as_one_sentence_at_a_time(
    name: str, reversal_data: PreparedData, tmp_path: Path
) -> None:
    train(config(name, "train.max_steps=3"), reversal_data.text, reversal_data.splits, tmp_path)
    model, text, _ = load_model(tmp_path, "latest", device="cuda")
    assert model.device.type == "cuda"
    sources = [source for source, _ in reversal_data.splits["valid"][:12]]
    for options in (SearchOptions(max_length=8), SearchOptions("beam", 8, beam_size=3)):
        batched = decode_ids(model, sources, options, batch_size=12)
        alone = [decode_ids(model, [source], options)[0] for source in sources]
        assert [h[0].tokens for h in batched] == [h[0].tokens for h in alone]


def test_serve_answers_on_cuda(reversal_data: PreparedData, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from padless.serving.server import load_app

    train(config("transformer", "train.max_steps=3"), reversal_data.text,
          reversal_data.splits, tmp_path)
    with TestClient(load_app(tmp_path, which="latest", device="cuda")) as client:
        info = client.get("/v1/model").json()
        assert info["device"].startswith("cuda") and info["precision"]["hardware"].startswith(
            "cuda")
        response = client.post("/v1/chat", json={"message": "w1 w2 w3"})
        assert response.status_code == 200, response.text
        lines = client.post("/v1/translate", json={"lines": ["w1", "", "w2 w3"]})
        assert lines.status_code == 200 and lines.json()["translations"][1] == ""
