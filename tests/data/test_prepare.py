"""``padless prepare`` end to end on fixtures; splits; the prepared dataset on disk."""

import json
import random
from pathlib import Path

import pytest

from padless.cli import main
from padless.data.dataset import PreparedData, split_pairs
from padless.data.loader import make_batches
from padless.data.options import PrepareOptions
from padless.data.prepare import prepare
from padless.data.vocabulary import UNK_ID

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _prepare(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["prepare", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _synthetic_tsv(path: Path, n: int = 300) -> Path:
    """A corpus big enough for a real split, with duplicates and rare words."""
    rng = random.Random(0)
    words = ["hello", "how", "are", "you", "fine", "thanks", "where", "home", "today", "good"]
    lines = []
    for i in range(n):
        src = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        tgt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        if i % 50 == 0:
            tgt += f" rareword{i}"
        lines.append(f"{src.capitalize()}?\t{tgt}.")
    lines += lines[:20]  # exact duplicates
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("corpus", "kept"),
    [
        ([FIXTURES / "cornell"], 6),
        ([FIXTURES / "convokit"], 3),
        ([FIXTURES / "chatterbot"], 4),
        ([FIXTURES / "chitchat.json"], 3),
        ([FIXTURES / "pairs.tsv"], 3),
        ([FIXTURES / "parallel.en", FIXTURES / "parallel.fr"], 3),
    ],
)
def test_every_format_prepares_and_loads(tmp_path, capsys, corpus, kept) -> None:
    code, out, err = _prepare(capsys, *corpus, "--out", tmp_path / "data")
    assert code == 0, err
    assert "warning" in err and "too small" in err  # tiny corpus: still works, with a warning
    data = PreparedData.load(tmp_path / "data")
    assert sum(len(v) for v in data.splits.values()) == kept == data.metadata["counts"]["kept"]
    assert data.vocab is data.text.vocab
    assert "pairs read" in out and "UNK rate" in out and "vocabulary" in out


def test_stored_ids_match_what_the_text_processor_encodes(tmp_path, capsys) -> None:
    # Training data and chat-time input must go through the very same normalise+tokenise.
    for tokenizer in ("word", "sentencepiece"):
        out = tmp_path / tokenizer
        assert _prepare(capsys, FIXTURES / "pairs.tsv", "--out", out, "--tokenizer", tokenizer,
                        "--vocab-size", "30")[0] == 0
        data = PreparedData.load(out)
        stored = [p for pairs in data.splits.values() for p in pairs]
        lines = (FIXTURES / "pairs.tsv").read_text().splitlines()
        raw = [line.split("\t") for line in lines if line]
        encoded = [(data.text.encode(s), data.text.encode(t)) for s, t in raw]
        assert sorted(stored) == sorted(encoded)


def test_cornell_summary_reports_drops_and_missing_ids(tmp_path, capsys) -> None:
    code, out, _ = _prepare(capsys, FIXTURES / "cornell", "--out", tmp_path / "d")
    assert code == 0
    meta = json.loads((tmp_path / "d" / "metadata.json").read_text())
    assert meta["counts"]["read"] == 10
    assert meta["counts"]["dropped"] == {"empty utterance": 2, "missing utterance": 2}
    assert meta["counts"]["missing_ids"] == 1
    assert "missing line ids" in out and "L999" in out
    train = (tmp_path / "d" / "train.tsv").read_text(encoding="utf-8")
    french = (tmp_path / "d" / "valid.tsv").read_text() + (tmp_path / "d" / "test.tsv").read_text()
    assert "ça va déjà vu ?" in train + french  # Latin-1 decoded, accents kept by default


def test_rerun_is_byte_identical(tmp_path, capsys) -> None:
    corpus = _synthetic_tsv(tmp_path / "c.tsv")
    for tokenizer in ("word", "sentencepiece"):
        outs = [tmp_path / f"{tokenizer}{k}" for k in range(2)]
        for out in outs:
            code, _, err = _prepare(capsys, corpus, "--out", out, "--tokenizer", tokenizer,
                                    "--vocab-size", "40")
            assert code == 0, err
        files = sorted(p.name for p in outs[0].iterdir())
        assert files == sorted(p.name for p in outs[1].iterdir())
        for name in files:
            assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    # Re-running into the same folder replaces it with the same bytes.
    before = (tmp_path / "word0" / "train.tsv").read_bytes()
    assert _prepare(capsys, corpus, "--out", tmp_path / "word0")[0] == 0
    assert (tmp_path / "word0" / "train.tsv").read_bytes() == before
    assert not (tmp_path / "word0" / "sentencepiece.model").exists()


def test_splits_are_deduplicated_and_vocab_is_built_on_train(tmp_path, capsys) -> None:
    corpus = _synthetic_tsv(tmp_path / "c.tsv")
    code, _, _ = _prepare(capsys, corpus, "--out", tmp_path / "d", "--valid-fraction", "0.1",
                          "--test-fraction", "0.1")
    assert code == 0
    data = PreparedData.load(tmp_path / "d")
    assert data.metadata["counts"]["dropped"]["duplicate"] >= 20  # 20 copies + chance repeats
    as_sets = {k: {(tuple(s), tuple(t)) for s, t in v} for k, v in data.splits.items()}
    assert sum(len(v) for v in data.splits.values()) == sum(len(s) for s in as_sets.values())
    assert not as_sets["train"] & as_sets["valid"]
    assert not as_sets["train"] & as_sets["test"]
    assert not as_sets["valid"] & as_sets["test"]
    train_words = {
        w for line in (tmp_path / "d" / "train.tsv").read_text().splitlines()
        for w in line.replace("\t", " ").split()
    }
    assert set(data.vocab.tokens[4:]) == train_words
    assert data.text.encode("hello rareword999") == [data.vocab.token_to_id("hello"), UNK_ID]


def test_min_count_max_length_and_drop_unk_pairs(tmp_path, capsys) -> None:
    corpus = _synthetic_tsv(tmp_path / "c.tsv")
    assert _prepare(capsys, corpus, "--out", tmp_path / "a", "--min-count", "2")[0] == 0
    a = PreparedData.load(tmp_path / "a")
    assert not any(t.startswith("rareword") for t in a.vocab.tokens)
    assert any(UNK_ID in tgt for _, tgt in a.splits["train"])  # rare words kept as UNK
    assert a.metadata["unk_rate"]["train"] > 0

    assert _prepare(capsys, corpus, "--out", tmp_path / "b", "--min-count", "2",
                    "--drop-unk-pairs", "--max-length", "6")[0] == 0
    b = PreparedData.load(tmp_path / "b")
    dropped = b.metadata["counts"]["dropped"]
    assert dropped["unknown word (--drop-unk-pairs)"] > 0 and dropped["longer than 6 tokens"] > 0
    for pairs in b.splits.values():
        assert all(UNK_ID not in s + t and max(len(s), len(t)) <= 6 for s, t in pairs)


def test_max_pairs_and_batches_from_a_prepared_dataset(tmp_path, capsys) -> None:
    corpus = _synthetic_tsv(tmp_path / "c.tsv")
    assert _prepare(capsys, corpus, "--out", tmp_path / "d", "--max-pairs", "100")[0] == 0
    data = PreparedData.load(tmp_path / "d")
    assert data.metadata["counts"]["read"] == 100
    sampler = data.sampler("train", batch_size=16, seed=1)
    batches = list(data.batches("train", sampler))
    assert sum(len(b) for b in batches) == len(data.splits["train"])
    assert list(make_batches(data.splits["train"], [[0, 1]]))[0].src.shape[1] == 2


def test_split_pairs_is_deterministic_by_seed() -> None:
    pairs = [(f"s{i}", f"t{i % 97}") for i in range(1000)]
    a, dup = split_pairs(pairs + pairs[:10], valid_fraction=0.1, test_fraction=0.05, seed=3)
    b, _ = split_pairs(pairs, valid_fraction=0.1, test_fraction=0.05, seed=3)
    c, _ = split_pairs(pairs, valid_fraction=0.1, test_fraction=0.05, seed=4)
    assert dup == 10 and a == b and a != c
    assert [len(a[k]) for k in ("train", "valid", "test")] == [850, 100, 50]


def test_bad_input_fails_with_file_and_line_or_is_skipped(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"hi\tthere\nno tab\nbye\tnow\n")
    code, out, err = _prepare(capsys, bad, "--out", tmp_path / "d")
    assert code == 2 and f"{bad}:2: expected 'source<TAB>target'" in err and out == ""
    code, out, _ = _prepare(capsys, bad, "--out", tmp_path / "d", "--skip-bad-lines")
    assert code == 0 and "bad lines skipped" in out
    code, _, err = _prepare(capsys, tmp_path / "missing.tsv", "--out", tmp_path / "e")
    assert code == 2 and "missing.tsv: no such file" in err


def test_out_folder_with_other_files_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = _prepare(capsys, FIXTURES / "pairs.tsv", "--out", tmp_path)
    assert code == 2 and "not a prepared dataset" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_loading_something_that_is_not_a_prepared_dataset(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such directory"):
        PreparedData.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="not a prepared dataset"):
        PreparedData.load(tmp_path)


def test_prepare_is_a_python_function_the_command_only_wraps(tmp_path, capsys) -> None:
    """The same corpus and options give byte-identical files from Python and from the CLI."""
    corpus = _synthetic_tsv(tmp_path / "corpus.tsv")
    options = PrepareOptions(min_count=2, max_length=10, seed=3)
    meta = prepare([str(corpus)], tmp_path / "py", options)
    assert meta["settings"]["min_count"] == 2 and meta["corpus_format"] == "tsv"
    assert _prepare(capsys, corpus, "--out", tmp_path / "cli", "--min-count", "2",
                    "--max-length", "10", "--seed", "3")[0] == 0
    for name in ("train.tsv", "valid.tsv", "test.tsv", "vocab.json", "text.json"):
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    cli_meta = json.loads((tmp_path / "cli" / "metadata.json").read_text())
    assert cli_meta["settings"] == meta["settings"] and cli_meta["counts"] == meta["counts"]
