"""``padless prepare`` never leaves a mix of two datasets, caps runaway lines, and refuses
bad options and outputs in one line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import padless.data.passes as passes_module
from padless.data.dataset import PreparedData
from padless.data.options import DEFAULT_MAX_LENGTH, MAX_VOCAB_SIZE, PrepareOptions
from padless.data.prepare import prepare
from padless.data.vocabulary import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from padless.runtime.errors import UserError
from padless.runtime.lock import exclusive_lock
from tests.helpers import assert_one_line_error, run_cli

FIXTURES = Path(__file__).parents[1] / "fixtures"


def corpus(path: Path, n: int = 150, extra: list[str] = ()) -> Path:
    lines = [f"question {i} about w{i % 7}\tanswer {i} with w{i % 5}" for i in range(n)]
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    return path


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def cli(capsys, *argv) -> tuple[int, str, str]:
    """``padless prepare ARGV``: (exit code, stdout, stderr)."""
    return run_cli(["prepare", *map(str, argv)], None, None, capsys)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     KeyboardInterrupt()])
def test_a_prepare_that_fails_while_writing_leaves_the_old_dataset(
        tmp_path, monkeypatch, failure) -> None:
    """It used to write vocab.json and train.tsv over the old dataset, then stop: the old
    valid/test/metadata beside the new vocabulary loaded without complaint."""
    out = tmp_path / "data"
    prepare([str(corpus(tmp_path / "a.tsv"))], out)
    before = files(out)
    written = []

    def write_split_then_fail(directory, name, pairs, vocab_size) -> dict:
        if written:
            raise failure
        written.append(name)
        return real_write_split(directory, name, pairs, vocab_size)

    real_write_split = passes_module.write_token_split
    monkeypatch.setattr(passes_module, "write_token_split", write_split_then_fail)
    other = corpus(tmp_path / "b.tsv", extra=["completely different\twords here"])
    with pytest.raises(type(failure)):
        prepare([str(other)], out, PrepareOptions(seed=5))
    assert written and files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tsv", "b.tsv", "data"]


def test_a_killed_prepares_leftovers_go_at_the_next_start(tmp_path) -> None:
    out = tmp_path / "data"
    for name in (".data.5f3a9b1c.tmp", ".data.5f3a9b1c.old.tmp"):  # what kill -9 leaves
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.tsv").write_text("x\ty\n" * 1000)
    (tmp_path / ".other.5f3a9b1c.tmp").mkdir()  # another dataset's: not ours to delete
    prepare([str(corpus(tmp_path / "a.tsv"))], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.5f3a9b1c.tmp", "a.tsv", "data"]


def test_a_second_prepare_into_the_same_dataset_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "data"
    with exclusive_lock(tmp_path / ".data.lock", f"dataset {out}", "padless prepare"):
        code, _, err = cli(capsys, corpus(tmp_path / "a.tsv"), "--out", out)
    assert_one_line_error(code, err, "prepare",
                          f"dataset {out} is in use by another padless prepare "
                          f"(pid {os.getpid()})")
    assert not out.exists()
    assert cli(capsys, tmp_path / "a.tsv", "--out", out)[0] == 0
    assert not (tmp_path / ".data.lock").exists()


def test_files_that_are_not_the_datasets_are_never_replaced(tmp_path, capsys) -> None:
    out = tmp_path / "data"
    prepare([str(corpus(tmp_path / "a.tsv"))], out)
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, tmp_path / "a.tsv", "--out", out)
    assert_one_line_error(code, err, "prepare", "holds notes.txt", "move it away")
    assert (out / "notes.txt").read_text() == "mine"


def test_a_symlinked_dataset_is_replaced_where_it_lives(tmp_path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk" / "data")
    prepare([str(corpus(tmp_path / "a.tsv"))], tmp_path / "link")
    prepare([str(corpus(tmp_path / "a.tsv"))], tmp_path / "link")
    assert (tmp_path / "link").is_symlink()
    assert PreparedData.load(tmp_path / "link").metadata["counts"]["kept"] == 150


def test_a_runaway_line_is_dropped_by_the_default_cap(tmp_path, capsys) -> None:
    """One 5 MB line became a million-token pair; the default --max-length drops it."""
    long_line = " ".join(["word"] * (DEFAULT_MAX_LENGTH + 1)) + "\tshort answer"
    path = corpus(tmp_path / "a.tsv", extra=[long_line])
    code, out, err = cli(capsys, path, "--out", tmp_path / "capped")
    assert code == 0
    assert f"longer than {DEFAULT_MAX_LENGTH} tokens" in out
    assert f"1 pairs longer than {DEFAULT_MAX_LENGTH} tokens on a side were dropped" in err
    assert PreparedData.load(tmp_path / "capped").metadata["counts"]["kept"] == 150
    assert cli(capsys, path, "--out", tmp_path / "all", "--max-length", "1000")[0] == 0
    assert PreparedData.load(tmp_path / "all").metadata["counts"]["kept"] == 151


@pytest.mark.parametrize(("argv", "words"), [
    (["--min-count", "-1"], ["argument --min-count: must be an integer >= 1, got '-1'"]),
    (["--min-count", "1000000"], ["no training word is seen 1000000 times", "--min-count"]),
    (["--tokenizer", "sentencepiece", "--vocab-size", "0"], ["argument --vocab-size"]),
    (["--tokenizer", "sentencepiece", "--vocab-size", "-5"], ["argument --vocab-size"]),
    (["--tokenizer", "sentencepiece", "--vocab-size", "5"],
     ["sentencepiece cannot train a 5-piece vocabulary", "raise --vocab-size"]),
    (["--valid-fraction", "nan"], ["argument --valid-fraction", "'nan'"]),
    (["--valid-fraction", "0.5", "--test-fraction", "0.5"], ["must leave some training data"]),
    (["--max-length", "0"], ["argument --max-length"]),
    (["--max-pairs", "0"], ["argument --max-pairs"]),
    # bounded: 2**31 was a ValueError traceback, 2**31 - 1 spun sentencepiece for minutes
    (["--tokenizer", "sentencepiece", "--vocab-size", "2147483648"],
     ["argument --vocab-size", f"<= {MAX_VOCAB_SIZE}"]),
    (["--tokenizer", "sentencepiece", "--vocab-size", "2147483647"],
     ["argument --vocab-size", f"<= {MAX_VOCAB_SIZE}"]),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, words) -> None:
    code, out, err = cli(capsys, corpus(tmp_path / "a.tsv"), "--out", tmp_path / "d", *argv)
    assert_one_line_error(code, err, "prepare", *words)
    assert out == "" and not (tmp_path / "d").exists()


LONE_SURROGATE_CORPORA = {  # each holds "\ud800" escaped, as JSON and YAML may
    "chitchat": ("c.json", '{"c": {"messages": [' + ", ".join(
        f'[{{"text": "hello \\ud800 there {i}"}}], [{{"text": "fine {i}"}}]'
        for i in range(30)) + ']}}'),
    "convokit": ("utterances.jsonl", "".join(
        f'{{"id": "q{i}", "text": "hello \\ud800 there {i}", "reply-to": null}}\n'
        f'{{"id": "a{i}", "text": "fine {i}", "reply-to": "q{i}"}}\n' for i in range(30))),
    "chatterbot": ("c.yml", "conversations:\n" + "".join(
        f'- - "hello \\ud800 there {i}"\n  - fine {i}\n' for i in range(30))),
}


@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
@pytest.mark.parametrize("fmt", sorted(LONE_SURROGATE_CORPORA))
def test_a_lone_surrogate_becomes_a_replacement_character(tmp_path, capsys, fmt,
                                                          tokenizer) -> None:
    """--normalize none kept them, and writing the split failed (UnicodeEncodeError); with
    sentencepiece the message advised raising --vocab-size."""
    name, text = LONE_SURROGATE_CORPORA[fmt]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    extra = ["--vocab-size", "40"] if tokenizer == "sentencepiece" else []
    code, out, err = cli(capsys, path, "--format", fmt, "--normalize", "none", "--tokenizer",
                         tokenizer, "--out", tmp_path / "d", "--min-count", "1", *extra)
    assert code == 0, err
    assert "replaced by U+FFFD" in out + err
    train = (tmp_path / "d" / "train.tsv").read_text(encoding="utf-8")
    assert "\ufffd" in train


def test_options_from_python_are_checked_by_name() -> None:
    for kwargs, field in (({"min_count": 0}, "min_count"), ({"vocab_size": 2}, "vocab_size"),
                          ({"max_length": 2.5}, "max_length"), ({"seed": -1}, "seed"),
                          ({"test_fraction": float("nan")}, "test_fraction"),
                          ({"tokenizer": "bpe"}, "tokenizer"), ({"format": "csv"}, "format")):
        with pytest.raises(UserError, match=f"^prepare\\.{field}: "):
            PrepareOptions(**kwargs)


def test_many_unknown_words_get_a_warning(tmp_path, capsys) -> None:
    code, _, err = cli(capsys, corpus(tmp_path / "a.tsv"), "--out", tmp_path / "d",
                       "--min-count", "20")
    assert code == 0 and "of the training tokens are <unk>" in err


@pytest.mark.parametrize("second", ["b.tsv", "b.json"])
def test_two_corpus_files_are_parallel_only_when_they_are_plain_text(tmp_path, capsys,
                                                                     second) -> None:
    a, b = corpus(tmp_path / "a.tsv"), corpus(tmp_path / second)
    code, _, err = cli(capsys, a, b, "--out", tmp_path / "d")
    assert_one_line_error(code, err, "prepare", "holds pairs already", "--format parallel")
    # asked for explicitly, two such files are still read line by line
    assert cli(capsys, a, b, "--out", tmp_path / "d", "--format", "parallel")[0] == 0


def test_text_spelling_special_tokens_stays_text(tmp_path) -> None:
    """Under --normalize none a corpus' literal <pad>, <s> and </s> used to become PAD, BOS
    and EOS ids inside sequences."""
    path = tmp_path / "a.tsv"
    path.write_text("".join(f"say <pad> and </s> {i}\t<s> ok </s> {i}\n" for i in range(40)))
    prepare([str(path)], tmp_path / "d", PrepareOptions(normalize="none"))
    data = PreparedData.load(tmp_path / "d")
    ids = [i for split in data.splits.values() for s, t in split for i in (*s, *t)]
    assert UNK_ID in ids and not {PAD_ID, BOS_ID, EOS_ID} & set(ids)


def test_an_out_under_a_file_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("mine")
    code, _, err = cli(capsys, corpus(tmp_path / "a.tsv"), "--out", tmp_path / "afile" / "d")
    assert_one_line_error(code, err, "prepare", "afile: is a file, not a directory")


def denied(where: Path, real: Callable) -> Callable:
    """``real`` (``os.open``, ``open``), but anything under ``where`` is a
    PermissionError: a read-only mount or a file without read permission, even as root."""
    def call(path, *args, **kwargs):
        if Path(os.fspath(path)).is_relative_to(where):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *args, **kwargs)
    return call


def test_an_out_under_a_read_only_directory_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    monkeypatch.setattr(os, "open", denied(read_only, os.open))
    code, _, err = cli(capsys, corpus(tmp_path / "a.tsv"), "--out", read_only / "d")
    assert_one_line_error(code, err, "prepare", "ro/.d.lock: Permission denied")
    monkeypatch.undo()
    assert list(read_only.iterdir()) == []


def test_an_unreadable_corpus_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    path = corpus(tmp_path / "a.tsv")
    monkeypatch.setattr("builtins.open", denied(path, open))
    code, _, err = cli(capsys, path, "--out", tmp_path / "d")
    assert_one_line_error(code, err, "prepare", "a.tsv: Permission denied")
    monkeypatch.undo()
    assert not (tmp_path / "d").exists()


def compress(data: bytes, suffix: str) -> bytes:
    import bz2
    import gzip
    import lzma

    import zstandard

    if suffix == ".zst":
        return zstandard.ZstdCompressor().compress(data)
    return {".gz": gzip, ".bz2": bz2, ".xz": lzma}[suffix].compress(data)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_a_compressed_corpus_prepares_as_the_plain_one(tmp_path, capsys, suffix) -> None:
    plain = corpus(tmp_path / "a.tsv")
    packed = tmp_path / f"a.tsv{suffix}"
    packed.write_bytes(compress(plain.read_bytes(), suffix))
    assert cli(capsys, plain, "--out", tmp_path / "plain")[0] == 0
    code, _, err = cli(capsys, packed, "--out", tmp_path / "packed")  # format from .tsv
    assert code == 0, err
    assert files(tmp_path / "packed").keys() == files(tmp_path / "plain").keys()
    for name in ("train.tsv", "valid.tsv", "test.tsv", "train.tokens", "vocab.json"):
        assert (tmp_path / "packed" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_a_truncated_gzip_is_one_line_and_writes_nothing(tmp_path, capsys, suffix) -> None:
    data = compress(corpus(tmp_path / "a.tsv").read_bytes() * 20, suffix)
    damaged = tmp_path / f"a.tsv{suffix}"
    damaged.write_bytes(data[: len(data) // 2])
    code, out, err = cli(capsys, damaged, "--out", tmp_path / "d")
    assert_one_line_error(code, err, "prepare", f"{damaged}: the compressed data is damaged "
                                                "after line", "nothing was written")
    assert not (tmp_path / "d").exists()


def test_a_line_of_megabytes_is_skipped_with_a_notice_not_loaded(tmp_path, capsys) -> None:
    path = corpus(tmp_path / "a.tsv", extra=["word " * 600_000 + "\tanswer"])  # 3 MB
    code, out, err = cli(capsys, path, "--out", tmp_path / "d")
    assert code == 0, err
    assert "line over 1 MB" in out
    assert PreparedData.load(tmp_path / "d").metadata["counts"]["dropped"]["line over 1 MB"] == 1


@pytest.mark.parametrize("model", ["unigram", "bpe"])
def test_the_largest_vocabulary_allowed_trains_on_a_tiny_corpus(tmp_path, capsys, model) -> None:
    """sentencepiece makes the pieces the corpus has, quickly, at the bound."""
    code, _, err = cli(capsys, corpus(tmp_path / "a.tsv", 20), "--out", tmp_path / "d",
                       "--tokenizer", "sentencepiece", "--spm-model", model,
                       "--vocab-size", MAX_VOCAB_SIZE)
    assert code == 0, err
    assert len(PreparedData.load(tmp_path / "d").vocab) < 1000


def _fifo(path: Path, data: bytes) -> Path:
    """``path`` made a FIFO that a thread fills with ``data`` once it is opened."""
    os.mkfifo(path)

    def fill() -> None:
        with open(path, "wb") as pipe:
            pipe.write(data)

    threading.Thread(target=fill, daemon=True).start()
    return path


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2", ".xz", ".zst"])
def test_a_fifo_corpus_is_read_once_compressed_or_not(tmp_path, capsys, suffix) -> None:
    plain = corpus(tmp_path / "a.tsv")
    data = plain.read_bytes() if not suffix else compress(plain.read_bytes(), suffix)
    fifo = _fifo(tmp_path / f"fifo.tsv{suffix}", data)  # it used to hang, reopened by name
    assert cli(capsys, plain, "--out", tmp_path / "plain")[0] == 0
    code, _, err = cli(capsys, fifo, "--out", tmp_path / "piped")
    assert code == 0, err
    for name in ("train.tokens", "valid.tokens", "vocab.json"):
        assert (tmp_path / "piped" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_a_compressed_corpus_on_stdin_prepares(tmp_path, suffix) -> None:
    """``gzip -c x.tsv | padless prepare /dev/stdin --format tsv`` was called damaged."""
    plain = corpus(tmp_path / "a.tsv")
    done = subprocess.run(
        [sys.executable, "-m", "padless", "prepare", "/dev/stdin", "--format", "tsv",
         "--out", str(tmp_path / "piped")], input=compress(plain.read_bytes(), suffix),
        capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert PreparedData.load(tmp_path / "piped").metadata["counts"]["kept"] == 150


def test_a_symlink_loop_as_the_corpus_says_so(tmp_path, capsys) -> None:
    (tmp_path / "a.tsv").symlink_to(tmp_path / "b.tsv")
    (tmp_path / "b.tsv").symlink_to(tmp_path / "a.tsv")
    code, _, err = cli(capsys, tmp_path / "a.tsv", "--out", tmp_path / "d")
    assert_one_line_error(code, err, "prepare", "a.tsv: a symbolic link that leads nowhere")


@pytest.mark.parametrize("swapped", ["vocab.json", "text.json", "sentencepiece.model"])
def test_a_file_of_another_dataset_swapped_in_is_refused_by_name(tmp_path, capsys,
                                                                 swapped) -> None:
    """A vocab.json from another dataset used to train with exit 0 on garbage."""
    options = ("--tokenizer", "sentencepiece", "--vocab-size", "40")
    assert cli(capsys, corpus(tmp_path / "a.tsv"), "--out", tmp_path / "a", *options)[0] == 0
    other = corpus(tmp_path / "b.tsv", extra=["something else entirely\tquite so"])
    assert cli(capsys, other, "--out", tmp_path / "b", *options, "--normalize", "none")[0] == 0
    assert (tmp_path / "a" / swapped).read_bytes() != (tmp_path / "b" / swapped).read_bytes()
    (tmp_path / "a" / swapped).write_bytes((tmp_path / "b" / swapped).read_bytes())
    with pytest.raises(UserError, match=f"{swapped}: not the file prepare wrote"):
        PreparedData.load(tmp_path / "a")
    code, _, err = run_cli(["train", "--data", str(tmp_path / "a"), "--out",
                            str(tmp_path / "run"), "--max-steps", "1"], None, None, capsys)
    assert_one_line_error(code, err, "train", f"{swapped}: not the file prepare wrote")
    assert not (tmp_path / "run").exists()


def test_a_vocabulary_of_another_size_than_recorded_is_refused(tmp_path, capsys) -> None:
    assert cli(capsys, corpus(tmp_path / "a.tsv"), "--out", tmp_path / "a")[0] == 0
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    del meta["text_files"]  # as a dataset of an earlier padless: no checksums to go by
    meta["vocab_size"] += 1
    (tmp_path / "a" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="vocab.json: .* tokens, metadata.json says"):
        PreparedData.load(tmp_path / "a")


def test_quickstart_with_a_folder_that_is_no_dataset_names_the_folder(tmp_path, capsys) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    code, _, err = run_cli(["quickstart", "--data-dir", str(tmp_path / "data"), "--out",
                            str(tmp_path / "run")], None, None, capsys)
    assert_one_line_error(code, err, "quickstart", "is not a prepared dataset",
                          "choose another folder for the dataset")
    assert "--out" not in err
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"
