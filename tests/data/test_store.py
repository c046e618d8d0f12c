"""The token store: what prepare writes is what training reads, a damaged one is refused by
name, and a dataset prepared before it still loads."""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import padless.data.sampler as sampler_module
from padless.cli import main
from padless.data.batch import Batch
from padless.data.dataset import PreparedData
from padless.data.loader import TrainingBatches
from padless.data.sampler import BucketBatchSampler
from padless.data.store import TokenSplit, token_dtype, write_token_split
from padless.runtime.errors import UserError
from tests.helpers import random_pairs


@pytest.mark.parametrize("vocab", [17, 1 << 16, (1 << 16) + 1])
def test_what_is_written_is_what_opens(tmp_path: Path, vocab: int) -> None:
    pairs = random_pairs(500, vocab)
    info = write_token_split(tmp_path, "train", pairs, vocab)
    assert info["dtype"] == ("<u2" if vocab <= 1 << 16 else "<i4")  # 65,537 ids need int32
    split = TokenSplit.open(tmp_path, "train", info, vocab)
    assert isinstance(split.tokens, np.memmap) and len(split) == 500
    assert list(split) == pairs and split[-1] == pairs[-1]
    source, target = split.lengths()
    assert source.tolist() == [len(s) for s, _ in pairs]
    assert target.tolist() == [len(t) for _, t in pairs]
    view = split[10:20].subset(np.array([3, 0]))
    assert view.rows.dtype == np.int32  # half the memory of int64 row numbers
    assert list(view) == [pairs[13], pairs[10]]
    assert [a.tolist() for a in view.lengths()] == [[len(pairs[13][0]), len(pairs[10][0])],
                                                     [len(pairs[13][1]), len(pairs[10][1])]]
    assert list(TokenSplit.from_pairs(pairs)) == pairs
    with pytest.raises(IndexError):
        split[500]


@pytest.mark.parametrize("batch_first", [False, True])
def test_a_batch_gathered_from_the_store_equals_one_built_from_the_pairs(
        tmp_path: Path, batch_first: bool) -> None:
    pairs = random_pairs(200, 70_000, seed=3)  # int32 ids
    split = TokenSplit.open(tmp_path, "train", write_token_split(tmp_path, "train", pairs,
                                                                 70_000), 70_000)
    view = split.subset(np.arange(200)[::-1])
    for indices in ([7], [0, 199, 5, 5, 42], list(range(0, 200, 3))):
        built = Batch.from_pairs([pairs[199 - i] for i in indices], batch_first=batch_first)
        gathered = view.batch(indices, batch_first=batch_first)
        for name in ("src", "src_lengths", "src_mask", "tgt_in", "tgt_out", "tgt_mask"):
            a, b = getattr(built, name), getattr(gathered, name)
            assert a.dtype == b.dtype and torch.equal(a, b), name
        assert gathered.n_tokens == built.n_tokens
    with pytest.raises(IndexError):
        view.batch([200])
    with pytest.raises(ValueError, match="empty"):
        view.batch([])


def test_token_dtype_switches_to_int32_past_uint16() -> None:
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.int32


def _damage(tmp_path: Path, how: str) -> tuple[dict, str]:
    """A store damaged ``how``; returns its info and the file the error must name."""
    pairs = random_pairs(50, 30)
    info = write_token_split(tmp_path, "train", pairs, 30)
    tokens, offsets = tmp_path / "train.tokens", tmp_path / "train.offsets"
    if how == "truncated":
        tokens.write_bytes(tokens.read_bytes()[:-2])
        return info, "train.tokens: "
    if how == "flipped byte":
        data = bytearray(tokens.read_bytes())
        data[7] ^= 1
        tokens.write_bytes(bytes(data))
        return info, "train.tokens: checksum mismatch"
    if how == "offsets out of order":  # consistent checksum: only the check of the values sees it
        values = np.fromfile(offsets, dtype="<i8")
        values[3], values[4] = values[4], values[3]
        offsets.write_bytes(values.tobytes())
        info["crc32"]["offsets"] = zlib.crc32(values.tobytes())
        return info, "train.offsets: a boundary out of order"
    if how == "id outside the vocabulary":
        values = np.fromfile(tokens, dtype="<u2")
        values[5] = 30
        tokens.write_bytes(values.tobytes())
        info["crc32"]["tokens"] = zlib.crc32(values.tobytes())
        return info, "train.tokens: an id outside the vocabulary of 30"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "flipped byte", "offsets out of order",
                                 "id outside the vocabulary"])
def test_a_damaged_store_is_refused_by_name(tmp_path: Path, how: str) -> None:
    info, words = _damage(tmp_path, how)
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        TokenSplit.open(tmp_path, "train", info, 30)


def _corpus(tmp_path: Path) -> Path:
    rng = random.Random(1)
    words = [f"w{i}" for i in range(40)]
    lines = [" ".join(rng.choices(words, k=rng.randint(1, 8))) + "\t"
             + " ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(400)]
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("\n".join(lines) + "\n")
    return corpus


def test_prepare_writes_the_store_and_a_tsv_only_dataset_still_loads(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert main(["prepare", str(_corpus(tmp_path)), "--format", "tsv", "--out", str(data)]) == 0
    new = PreparedData.load(data)
    assert isinstance(new.splits["train"].tokens, np.memmap)
    # as a dataset prepared before the store: its TSV files and a metadata without "store"
    old = tmp_path / "old"
    old.mkdir()
    for path in data.iterdir():
        if path.suffix not in (".tokens", ".offsets"):
            (old / path.name).write_bytes(path.read_bytes())
    metadata = json.loads((old / "metadata.json").read_text())
    del metadata["store"]
    (old / "metadata.json").write_text(json.dumps(metadata))
    before = PreparedData.load(old)
    for name in ("train", "valid", "test"):
        assert list(before.splits[name]) == list(new.splits[name])
    # and training reads the same batches from either
    a = TrainingBatches(new.splits["train"], batch_size=16, max_tokens=None, seed=3)
    b = TrainingBatches(before.splits["train"], batch_size=16, max_tokens=None, seed=3)
    for _ in range(30):
        x, y = next(a), next(b)
        assert x.src.equal(y.src) and x.tgt_out.equal(y.tgt_out)


def test_a_missing_store_file_is_one_line(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    assert main(["prepare", str(_corpus(tmp_path)), "--format", "tsv", "--out", str(data)]) == 0
    (data / "valid.offsets").unlink()
    with pytest.raises(UserError, match=r"valid\.offsets: missing"):
        PreparedData.load(data)


def _greedy_reference(src: list[int], tgt: list[int], batch_size: int | None,
                      max_tokens: int | None) -> list[list[int]]:
    """The cut the sampler makes, pair by pair in plain Python (its first implementation)."""
    ordered = sorted(range(len(src)), key=lambda i: (tgt[i], src[i]))
    batches, batch, longest = [], [], 0
    for i in ordered:
        width = max(src[i], tgt[i] + 1)
        widest = max(longest, width)
        full = (batch_size is not None and len(batch) >= batch_size) or (
            max_tokens is not None and widest * (len(batch) + 1) > max_tokens)
        if batch and full:
            batches.append(batch)
            batch, widest = [], width
        batch.append(i)
        longest = widest
    return [*batches, batch]


@pytest.mark.parametrize("block", [sampler_module.RUN_BLOCK, 1, 2, 7])
@pytest.mark.parametrize("seed", range(20))
def test_the_run_by_run_cut_is_the_pair_by_pair_cut(seed: int, block: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler_module, "RUN_BLOCK", block)  # runs across block edges
    rng = random.Random(seed)
    n = rng.randint(1, 400)
    src = [rng.randint(1, 30) for _ in range(n)]
    tgt = [rng.randint(1, 30) for _ in range(n)]
    batch_size = rng.choice([None, 1, 5, 64])
    max_tokens = rng.choice([7, 40, 300]) if batch_size is None else rng.choice([None, 40])
    sampler = BucketBatchSampler(src, tgt, batch_size=batch_size, max_tokens=max_tokens,
                                 shuffle=False)
    assert sampler.global_batches() == _greedy_reference(src, tgt, batch_size, max_tokens)


def test_a_state_of_the_list_based_sampler_restarts_its_epoch_with_a_notice() -> None:
    src, tgt = [3, 1, 2, 5] * 10, [1, 2, 3, 4] * 10
    sampler = BucketBatchSampler(src, tgt, batch_size=4, seed=2)
    old_state = {"epoch": 3, "position": 5, "seed": 2, "num_samples": 40, "batch_size": 4,
                 "max_tokens": None}  # what a checkpoint of an earlier padless holds
    notice = sampler.load_state_dict(old_state)
    assert "epoch 3 starts again" in notice and "5 batches" in notice
    assert sampler.state_dict()["position"] == 0 and sampler.epoch == 3
    assert sampler.load_state_dict(sampler.state_dict()) is None


def test_a_resume_on_pairs_prepared_again_restarts_its_epoch_with_a_notice(
        tmp_path: Path) -> None:
    pairs = random_pairs(200, 50)
    reordered = pairs[::-1]  # the same pairs, prepared again in another order
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    info = write_token_split(tmp_path / "a", "train", pairs, 50)
    again = write_token_split(tmp_path / "b", "train", reordered, 50)
    first = TrainingBatches(TokenSplit.open(tmp_path / "a", "train", info, 50)[:150],
                            batch_size=8, max_tokens=None, seed=1)
    for _ in range(5):
        next(first)
    state = first.state_dict()
    assert state["position"] == 5 and state["data"] == f"{info['crc32']['tokens']:08x}" \
        f"{info['crc32']['offsets']:08x}"
    same = TrainingBatches(TokenSplit.open(tmp_path / "a", "train", info, 50)[:150],
                           batch_size=8, max_tokens=None, seed=1)
    assert same.load_state_dict(state) is None and same.state_dict()["position"] == 5
    in_memory = TrainingBatches(pairs[:150], batch_size=8, max_tokens=None, seed=1)
    assert in_memory.load_state_dict(in_memory.state_dict()) is None
    moved = TrainingBatches(TokenSplit.open(tmp_path / "b", "train", again, 50)[:150],
                            batch_size=8, max_tokens=None, seed=1)
    notice = moved.load_state_dict(state)
    assert "prepared again" in notice and "epoch 0 starts again" in notice
    assert "5 batches" in notice and moved.state_dict()["position"] == 0
    older = {key: value for key, value in state.items() if key != "data"}
    assert moved.load_state_dict(older) is None  # a checkpoint before the check: trusted
