"""Readers on fixture files in the exact public formats, and their error messages."""

from pathlib import Path

import pytest

from padless.data.readers import (
    CorpusError,
    ReadStats,
    detect_format,
    read_chatterbot,
    read_chitchat,
    read_convokit,
    read_cornell,
    read_corpus,
    read_parallel,
    read_tsv,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_cornell_latin1_empty_utterances_and_missing_ids() -> None:
    stats = ReadStats()
    pairs = list(read_cornell(FIXTURES / "cornell", stats))
    assert pairs[0] == ("They do to!", "They do not!")
    assert ("Ça va, déjà vu?", "Très bien, merci.") in pairs  # decoded from ISO-8859-1 bytes
    assert (
        "I'm kidding.  You know how sometimes you just become this \"persona\"?  "
        "And you don't know how to quit?",
        "No",
    ) in pairs
    assert len(pairs) == 6
    assert stats.pairs_read == 10
    assert stats.dropped == {"missing utterance": 2, "empty utterance": 2}
    assert stats.missing_ids == 1
    assert list(read_cornell(FIXTURES / "cornell" / "movie_lines.txt", ReadStats())) == pairs
    assert any("L999" in p and "movie_conversations.txt:5" in p for p in stats.problems)


def test_cornell_id_list_is_never_evaluated(tmp_path: Path) -> None:
    (tmp_path / "movie_lines.txt").write_bytes(b"L1 +++$+++ u0 +++$+++ m0 +++$+++ A +++$+++ hi\n")
    (tmp_path / "movie_conversations.txt").write_bytes(
        b"u0 +++$+++ u1 +++$+++ m0 +++$+++ __import__('os').system('false')\n"
    )
    with pytest.raises(CorpusError, match=r"movie_conversations\.txt:1: expected 4 fields"):
        list(read_cornell(tmp_path, ReadStats()))


def test_cornell_tolerates_stripped_trailing_space_and_reports_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "movie_lines.txt").write_bytes(
        b"L1 +++$+++ u0 +++$+++ m0 +++$+++ A +++$+++ hi\n"
        b"L2 +++$+++ u1 +++$+++ m0 +++$+++ B +++$+++\n"  # empty text, trailing space stripped
        b"L3 only two +++$+++ fields\n"
    )
    (tmp_path / "movie_conversations.txt").write_bytes(
        b"u0 +++$+++ u1 +++$+++ m0 +++$+++ ['L1', 'L2']\n"
    )
    with pytest.raises(CorpusError, match=r"movie_lines\.txt:3: expected 5 fields"):
        list(read_cornell(tmp_path, ReadStats()))
    stats = ReadStats(skip_bad_lines=True)
    assert list(read_cornell(tmp_path, stats)) == []
    assert stats.bad_lines == 1 and stats.dropped == {"empty utterance": 1}


def test_convokit_pairs_follow_reply_to_whatever_the_order() -> None:
    stats = ReadStats()
    pairs = list(read_convokit(FIXTURES / "convokit", stats))
    assert pairs == [
        ("Hi Alice! How are you?", "Fine, thanks. And you?"),
        ("Hello Bob.", "Hi Alice! How are you?"),
        ("Schönen Tag noch.", "Ich auch, Grüße!"),
    ]
    assert stats.dropped == {"empty utterance": 1, "missing utterance": 1}
    assert list(read_convokit(FIXTURES / "convokit" / "utterances.jsonl", ReadStats())) == pairs


def test_chitchat_fixture_and_bundled_corpus() -> None:
    stats = ReadStats()
    pairs = list(read_chitchat(FIXTURES / "chitchat.json", stats))
    assert pairs == [("hey how are you?", "good, you?"), ("good, you?", "great"), ("bye", "see ya")]
    bundled = read_chitchat(None, ReadStats())
    # The package's first conversation; its first message has two utterances.
    assert next(bundled) == (
        "Hello How are you doing today?", "whats up MD im doing good how are you doing?"
    )


def test_chatterbot_yaml_file_and_folder() -> None:
    pairs = list(read_chatterbot(FIXTURES / "chatterbot", ReadStats()))
    assert pairs == [
        ("Hello", "Hi"),
        ("How are you doing?", "I am doing well."),
        ("I am doing well.", "That is good to hear"),
        ("What is the answer?", "42"),  # YAML reads 42 as a number
    ]
    assert list(read_chatterbot(FIXTURES / "chatterbot" / "greetings.yml", ReadStats())) == pairs


def test_tsv_and_parallel() -> None:
    assert list(read_tsv(FIXTURES / "pairs.tsv", ReadStats())) == [
        ("Hello there!", "Hi, how are you?"),
        ("I am fine.", "Good to hear."),
        ("Where are you going?", "Home."),
    ]
    pairs = list(read_parallel(FIXTURES / "parallel.en", FIXTURES / "parallel.fr", ReadStats()))
    assert pairs[1] == ("I like tea.", "J’aime le thé.")
    assert len(pairs) == 3


def test_detect_format() -> None:
    assert detect_format(["chitchat"]) == "chitchat"
    assert detect_format([str(FIXTURES / "cornell")]) == "cornell"
    assert detect_format([str(FIXTURES / "cornell" / "movie_lines.txt")]) == "cornell"
    assert detect_format([str(FIXTURES / "convokit")]) == "convokit"
    assert detect_format([str(FIXTURES / "chatterbot")]) == "chatterbot"
    assert detect_format([str(FIXTURES / "pairs.tsv")]) == "tsv"
    assert detect_format([str(FIXTURES / "parallel.en"), str(FIXTURES / "parallel.fr")]) == (
        "parallel"
    )
    with pytest.raises(CorpusError, match="no such file"):
        detect_format(["/nonexistent/corpus.tsv"])


# -- malformed input: one clear message naming file and line, or counted and skipped ----


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_INPUTS = [
    ("tsv", "bad.tsv", b"a\tb\nno tab here\nc\td\n", r"bad\.tsv:2: expected 'source<TAB>target'"),
    ("tsv", "enc.tsv", b"a\tb\nd\xe9j\xe0\tvu\nc\td\n", r"enc\.tsv:2: not valid utf-8"),
    ("convokit", "utterances.jsonl", b'{"id": "1", "text": "a", "reply-to": null}\n{"id": "2",\n',
     r"utterances\.jsonl:2: broken JSON"),
    ("chatterbot", "bad.yml", b"conversations:\n- - hi\n  - [unclosed\n",
     r"bad\.yml:\d+: broken YAML"),
    ("chatterbot", "enc.yml", b"conversations:\n- - caf\xe9\n  - ok\n",
     r"enc\.yml:2: not valid utf-8"),
    ("convokit", "utterances.jsonl", b'{"id": "1", "text": "a"}\n["a list"]\n',
     r"utterances\.jsonl:2: expected a JSON object"),
    ("chitchat", "bad.json", b'{"c": {"messages": [\n[{"text": "hi"}],\n',
     r"bad\.json:\d+: broken"),
]


@pytest.mark.parametrize(("fmt", "name", "data", "message"), BAD_INPUTS)
def test_bad_input_names_file_and_line(
    tmp_path: Path, fmt: str, name: str, data: bytes, message: str
) -> None:
    path = _write(tmp_path, name, data)
    with pytest.raises(CorpusError, match=message):
        list(read_corpus([str(path)], fmt, ReadStats()))


def test_skip_bad_lines_counts_and_keeps_going(tmp_path: Path) -> None:
    path = _write(tmp_path, "mixed.tsv", b"a\tb\nno tab\nd\xe9j\xe0\tvu\nx\ty\tz\nc\td\n")
    stats = ReadStats(skip_bad_lines=True)
    assert list(read_tsv(path, stats)) == [("a", "b"), ("c", "d")]
    assert stats.bad_lines == 3
    assert stats.problems[0].startswith(f"{path}:2:")


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"movie_lines\.txt: no such file"):
        list(read_cornell(tmp_path, ReadStats()))
    with pytest.raises(CorpusError, match=r"nope\.tsv: no such file"):
        list(read_tsv(tmp_path / "nope.tsv", ReadStats()))


def test_parallel_files_of_different_lengths(tmp_path: Path) -> None:
    src = _write(tmp_path, "a.txt", b"one\ntwo\nthree\n")
    tgt = _write(tmp_path, "b.txt", b"un\ndeux\n")
    with pytest.raises(CorpusError, match=r"b\.txt: ends before line 3 of .*a\.txt"):
        list(read_parallel(src, tgt, ReadStats()))
