"""Test-wide settings and the fixtures several test folders share.

- ``reversal_data_dir`` / ``reversal_data``: a prepared dataset (written with the data API)
  of a task a tiny model learns in a few dozen steps: reverse a sequence of words.
- ``qa_data_dir`` / ``qa_run_dir``: a few dozen question/answer pairs prepared with
  ``padless prepare``, and a run of ``padless train`` on them (one step: nearly random).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from padless.cli import main
from padless.data.dataset import PreparedData
from tests.helpers import ANSWERS, QUESTIONS, TINY_RUN, write_reversal_dataset

# CI runs the same examples every time (a failure there is reproducible); local runs explore.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped where there is no CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (tests/gpu/gpu_check.sh runs these)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models: one intra-op thread is faster, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def reversal_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reversal_dataset(tmp_path_factory.mktemp("reversal"))


@pytest.fixture(scope="session")
def reversal_data(reversal_data_dir: Path) -> PreparedData:
    return PreparedData.load(reversal_data_dir)


@pytest.fixture(scope="session")
def qa_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset of a few dozen question/answer pairs."""
    root = tmp_path_factory.mktemp("qa")
    corpus = root / "pairs.tsv"
    lines = [f"{q} {i}\t{a}" for i in range(4) for q, a in zip(QUESTIONS, ANSWERS, strict=True)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["prepare", str(corpus), "--format", "tsv", "--out", str(root / "prepared"),
                 "--valid-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    return root / "prepared"


@pytest.fixture(scope="session")
def qa_run_dir(qa_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of `padless train`: a tiny model after one step (nearly random)."""
    root = tmp_path_factory.mktemp("qa-run") / "run"
    argv = ["train", "--data", str(qa_data_dir), "--out", str(root), "--max-steps", "1"]
    assert main(argv + [f"--set={kv}" for kv in TINY_RUN]) == 0
    return root


@pytest.fixture()
def every_layer_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--quantize int8`` quantizes every linear layer, whatever the timing probe would say
    of these tiny models' shapes (where int8 does not pay): tests of int8's answers must not
    depend on a timing."""
    monkeypatch.setattr("padless.models.quantize.int8_pays", lambda *shape: True)
