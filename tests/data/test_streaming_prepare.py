"""prepare in two streaming passes: the same files for any number of workers, duplicates
removed with digests, a split by digest for corpora that are not small."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from padless.cli import main
from padless.data import parallel
from padless.data.dataset import PreparedData
from padless.data.dedupe import SeenDigests, pair_digest, split_of
from padless.data.options import PrepareOptions
from padless.data.parallel import ChunkPool
from padless.data.passes import SMALL_CORPUS
from padless.data.prepare import prepare


def chat_corpus(path: Path, n: int, seed: int = 0, duplicates: int = 0) -> Path:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)] + ["café", "naïve", "déjà"]
    lines = [" ".join(rng.choices(words, k=rng.randint(1, 12))) + "\t"
             + " ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(n)]
    lines += rng.choices(lines, k=duplicates)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
def test_the_output_is_byte_identical_for_any_number_of_workers(tmp_path, tokenizer) -> None:
    """Above a chunk (4,096 pairs) the worker processes start; the files must not change."""
    corpus = chat_corpus(tmp_path / "c.tsv", 9000, duplicates=500)
    options = PrepareOptions(tokenizer=tokenizer, vocab_size=200, min_count=2)
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        prepare([str(corpus)], out, options, workers=workers)
        outputs.append(files(out))
    assert outputs[0] == outputs[1]
    assert not [name for name in outputs[0] if name.endswith(".pass1")]  # no leftovers


def test_duplicates_are_dropped_and_the_split_follows_the_digest(tmp_path) -> None:
    corpus = chat_corpus(tmp_path / "c.tsv", 3000, duplicates=400)
    meta = prepare([str(corpus)], tmp_path / "d", PrepareOptions(valid_fraction=0.1,
                                                                 test_fraction=0.05))
    unique = len(set(corpus.read_text(encoding="utf-8").splitlines()))
    counts = meta["counts"]
    assert counts["dropped"]["duplicate"] == 3400 - unique
    assert sum(counts["splits"].values()) == unique
    assert abs(counts["splits"]["valid"] / unique - 0.1) < 0.02
    assert abs(counts["splits"]["test"] / unique - 0.05) < 0.015
    data = PreparedData.load(tmp_path / "d")
    pairs = {name: {(tuple(s), tuple(t)) for s, t in data.splits[name]} for name in data.splits}
    assert not pairs["train"] & (pairs["valid"] | pairs["test"])  # no pair in two splits
    # the split of a pair is its digest's: the same pair in another corpus, the same split
    for line in (tmp_path / "d" / "valid.tsv").read_text(encoding="utf-8").splitlines()[:20]:
        source, target = line.split("\t")
        assert split_of(pair_digest(source, target, 0), 0.1, 0.05) == "valid"


def test_a_small_corpus_keeps_the_exact_seeded_split(tmp_path) -> None:
    corpus = chat_corpus(tmp_path / "c.tsv", SMALL_CORPUS - 10)
    meta = prepare([str(corpus)], tmp_path / "d", PrepareOptions(valid_fraction=0.01,
                                                                 test_fraction=0.01))
    assert meta["counts"]["splits"]["valid"] == 1 and meta["counts"]["splits"]["test"] == 1
    assert any("too small" in w for w in meta["warnings"])


def test_seen_digests_match_a_set() -> None:
    rng = np.random.default_rng(0)
    seen, reference = SeenDigests(), set()
    for _ in range(40):
        block = rng.integers(0, 5000, size=rng.integers(0, 300)).astype(np.uint64)
        expected = []
        for digest in block.tolist():
            expected.append(digest not in reference)
            reference.add(digest)
        assert seen.first_seen(block).tolist() == expected
    assert len(seen) == len(reference)


def test_split_of_cuts_the_digest_range_by_the_fractions() -> None:
    names = [split_of(pair_digest(str(i), "x", 3), 0.2, 0.1) for i in range(20_000)]
    assert abs(names.count("valid") / 20_000 - 0.2) < 0.01
    assert abs(names.count("test") / 20_000 - 0.1) < 0.01
    assert pair_digest("a", "b", 3) != pair_digest("a", "b", 4)  # the seed decides the split


@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
def test_a_corpus_of_one_chunk_starts_no_worker(tmp_path, tokenizer, monkeypatch) -> None:
    def no_processes(method):
        raise AssertionError(f"a {method} pool started for one chunk")

    monkeypatch.setattr(parallel.multiprocessing, "get_context", no_processes)
    corpus = chat_corpus(tmp_path / "c.tsv", 40)
    meta = prepare([str(corpus)], tmp_path / "d",
                   PrepareOptions(tokenizer=tokenizer, vocab_size=60), workers=64)
    assert sum(meta["counts"]["splits"].values()) == 40


def test_the_workers_are_at_most_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(parallel, "default_workers", lambda: 3)
    assert ChunkPool(64).workers == 3 and ChunkPool(2).workers == 2


def test_a_count_of_workers_past_the_bound_is_one_line(tmp_path, capsys) -> None:
    corpus = chat_corpus(tmp_path / "c.tsv", 10)
    assert main(["prepare", str(corpus), "--out", str(tmp_path / "d"),
                 "--workers", "99999999999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("padless prepare: error: argument --workers: must be an integer >= 1"
                          f" and <= {parallel.MAX_WORKERS}") and "\n" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_pool_starts_unwinds_once_the_pool_exists(monkeypatch, sig) -> None:
    """It unwound mid-spawn: a worker left without its start-up data printed an EOFError."""
    class Stopped(Exception):
        pass

    def stop(signum, frame):
        raise Stopped

    started: list[object] = []

    class Context:
        def Pool(self, *args, **kwargs):  # noqa: N802 (multiprocessing's name)
            os.kill(os.getpid(), sig)  # arrives while the workers start
            started.append(object())
            return started[-1]

    monkeypatch.setattr(parallel.multiprocessing, "get_context", lambda method: Context())
    previous = signal.signal(sig, stop)
    pool = ChunkPool(2)
    try:
        with pytest.raises(Stopped):
            pool._start()
    finally:
        signal.signal(sig, previous)
    assert started and pool._pool is started[0]  # so close() ends its workers


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_sigterm_ends_prepare_and_its_workers_with_one_line(tmp_path) -> None:
    corpus = chat_corpus(tmp_path / "c.tsv", 120_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "padless", "prepare", str(corpus), "--out", str(tmp_path / "d"),
         "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _children(process.pid) and process.poll() is None:  # the pool has started
        assert time.monotonic() < deadline, "no worker started"
        time.sleep(0.05)
    workers = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert workers, "prepare ended before its pool started: give it a larger corpus"
    assert process.returncode == 143 and err.strip() == "terminated", err
    # the workers end with the pool, multiprocessing's resource tracker once it reads the
    # end of prepare's pipe: both within seconds
    deadline = time.monotonic() + 30
    while alive := [pid for pid in workers if _running(pid)]:
        assert time.monotonic() < deadline, f"left running: {alive}"
        time.sleep(0.05)
    assert not (tmp_path / "d").exists()  # nothing half-written is left as the dataset
