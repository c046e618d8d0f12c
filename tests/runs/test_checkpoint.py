"""Checkpoints: plain data only, atomic, one clear line for every file that cannot be used."""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
import torch

from padless.data.dataset import PreparedData
from padless.data.text import TextProcessor
from padless.data.vocabulary import Vocabulary
from padless.runs.checkpoint import Checkpoint
from padless.runs.loading import load_model
from padless.training.config import load_config
from padless.training.trainer import train
from tests.helpers import TINY_TRAIN


def run_config(*extra: str):
    return load_config(None, [*TINY_TRAIN, *extra])


def allowed_global(name: str) -> bool:
    return (name == "collections.OrderedDict" or name.startswith("torch._utils._rebuild_tensor")
            or re.fullmatch(r"torch\.\w+Storage", name) is not None)


def test_checkpoint_holds_only_tensors_and_plain_types(
    reversal_data: PreparedData, tmp_path: Path
) -> None:
    train(run_config("train.max_steps=2", "train.valid_every=1"), reversal_data.text,
          reversal_data.splits, tmp_path)
    for which in ("latest", "best"):
        path = tmp_path / f"{which}.pt"
        state = torch.load(path, weights_only=True)
        assert state["version"] == 2 and state["state"]["step"] == 2
        assert state["config"]["model"]["hidden_size"] == 16
        with zipfile.ZipFile(path) as z:
            (pkl,) = [n for n in z.namelist() if n.endswith("data.pkl")]
            ops = list(pickletools.genops(z.read(pkl)))
        names = {arg.replace(" ", ".") for op, arg, _ in ops if op.name == "GLOBAL"}
        assert names and all(allowed_global(n) for n in names), names
        assert not any(op.name == "STACK_GLOBAL" for op, _, _ in ops)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files

    model, text, config = load_model(tmp_path, "best")
    assert not model.training and config.hidden_size == 16
    assert text.vocab == reversal_data.vocab
    state = Checkpoint.load(tmp_path / "latest.pt").weights
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name])




def test_unusable_files_get_one_line_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"format": "padless-checkpoint", "version": 1}, good)
    data = good.read_bytes()

    cases = {
        "missing.pt": None,
        "truncated.pt": data[: len(data) // 2],
        "random.pt": bytes(range(256)) * 8,
        "empty.pt": b"",
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    torch.save({"x": Decimal(1)}, tmp_path / "objects.pt")  # weights_only refuses it
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.save({"format": "padless-checkpoint", "version": 99}, tmp_path / "future.pt")
    torch.save({"format": "padless-checkpoint", "version": 2, "config": {}, "vocab": {},
                "text": {}, "weights": {}, "state": {"step": "many"}}, tmp_path / "state.pt")
    expected = {
        "missing.pt": "no such checkpoint", "truncated.pt": "truncated or corrupt",
        "random.pt": "not a padless checkpoint", "empty.pt": "truncated or corrupt",
        "objects.pt": "not a padless checkpoint", "foreign.pt": "not a padless checkpoint",
        "future.pt": "version 99", "state.pt": "train state step is a str",
    }
    for name, words in expected.items():
        with pytest.raises(ValueError, match=words) as caught:
            Checkpoint.load(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(str(tmp_path / name)), message
        assert "\n" not in message and "weights_only=False" not in message, message


def test_a_file_in_the_first_release_format_still_loads(
    reversal_data: PreparedData, tmp_path: Path
) -> None:
    """Version-1 files written before the `arch` key existed: the GRU, as they hold."""
    train(run_config("train.max_steps=1"), reversal_data.text, reversal_data.splits, tmp_path)
    state = torch.load(tmp_path / "latest.pt", weights_only=True)
    del state["config"]["model"]["arch"]  # what the first release wrote
    torch.save(state, tmp_path / "latest.pt")
    checkpoint = Checkpoint.load(tmp_path / "latest.pt")
    assert checkpoint.model_config().arch == "gru"
    model, _, _ = load_model(tmp_path, "latest")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["weights"][name])
    # and a resumed run accepts it: the model settings are compared as configs, not dicts
    result = train(run_config("train.max_steps=2"), reversal_data.text, reversal_data.splits,
                   tmp_path, resume=True)
    assert result.step == 2


def test_resuming_with_another_vocabulary_or_model_is_refused(
    reversal_data: PreparedData, tmp_path: Path
) -> None:
    train(run_config("train.max_steps=1"), reversal_data.text, reversal_data.splits, tmp_path)
    path = tmp_path / "latest.pt"
    checkpoint = Checkpoint.load(path)
    checkpoint.check_text(reversal_data.text, path)  # the same: accepted
    with pytest.raises(ValueError, match="model settings differ"):
        train(run_config("model.hidden_size=8", "train.max_steps=2"), reversal_data.text,
              reversal_data.splits, tmp_path, resume=True)
    shorter = TextProcessor(Vocabulary(["w0"]), normalize="none")
    with pytest.raises(ValueError, match="vocabulary differs"):
        checkpoint.check_text(shorter, path)
    other_text = TextProcessor(reversal_data.vocab, normalize="tutorial")
    with pytest.raises(ValueError, match="text settings .* differ"):
        checkpoint.check_text(other_text, path)


def test_a_damaged_tensor_is_refused_not_loaded(reversal_data: PreparedData,
                                                tmp_path: Path) -> None:
    """torch does not check the archive's checksums: a flipped byte in the weights loaded
    silently. Every member is checked against its CRC-32 first."""
    train(run_config("train.max_steps=1"), reversal_data.text, reversal_data.splits, tmp_path)
    path = tmp_path / "best.pt"
    with zipfile.ZipFile(path) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size)
    data = bytearray(path.read_bytes())
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data[start + member.file_size // 2] ^= 0x40  # one bit in the middle of a tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"best\.pt: .*corrupt .*{member.filename} fails its "
                                         "checksum"):
        Checkpoint.load(path)


def test_torchs_advice_to_drop_weights_only_is_never_passed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.save({"format": "padless-checkpoint"}, tmp_path / "x.pt")
    advice = ("Weights only load failed. Re-running `torch.load` with `weights_only` set to "
              "`False` will likely succeed, but it can result in arbitrary code execution.")
    for error in (RuntimeError(advice), pickle.UnpicklingError(advice), IndexError(advice),
                  RuntimeError("weights_only=False would load it")):
        def fail(*args, error=error, **kwargs):
            raise error
        monkeypatch.setattr(torch, "load", fail)
        with pytest.raises(ValueError) as caught:
            Checkpoint.load(tmp_path / "x.pt")
        assert "weights_only" not in str(caught.value) and "x.pt" in str(caught.value)
