"""Every corpus reader fed random bytes and near-valid files (hypothesis).

Whatever a file holds, a reader has three allowed outcomes: a ``CorpusError`` that names the
file, pairs with the malformed lines counted as skipped (``--skip-bad-lines``), or a correct
parse. Never another exception, an empty side, or counts that do not add up. For files built
valid, the parse must equal what the format says (written out below, independently of the
readers); the same files with a few bytes mutated must still end in one of the outcomes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from padless.data.reader_base import compression_of
from padless.data.readers import (
    CORNELL_SEP,
    CorpusError,
    ReadStats,
    TextPair,
    read_chatterbot,
    read_chitchat,
    read_convokit,
    read_cornell,
    read_parallel,
    read_tsv,
)

FUZZ = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])

# name -> (files the reader reads, how to call it on the directory holding them)
Reader = Callable[[Path, ReadStats], Iterator[TextPair]]
READERS: dict[str, tuple[tuple[str, ...], Reader]] = {
    "tsv": (("pairs.tsv",), lambda d, s: read_tsv(d / "pairs.tsv", s)),
    "parallel": (("src.txt", "tgt.txt"),
                 lambda d, s: read_parallel(d / "src.txt", d / "tgt.txt", s)),
    "cornell": (("movie_lines.txt", "movie_conversations.txt"), read_cornell),
    "convokit": (("utterances.jsonl",), lambda d, s: read_convokit(d / "utterances.jsonl", s)),
    "chitchat": (("dataset.json",), lambda d, s: read_chitchat(d / "dataset.json", s)),
    "chatterbot": (("corpus.yml",), lambda d, s: read_chatterbot(d / "corpus.yml", s)),
}


def outcome(fmt: str, contents: dict[str, bytes], skip: bool) -> list[TextPair] | None:
    """Run reader ``fmt`` on files with ``contents``: its pairs, or None after a CorpusError.

    Checks what every outcome must satisfy; any other exception fails the test.
    """
    names, read = READERS[fmt]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name in names:
            (directory / name).write_bytes(contents[name])
        stats = ReadStats(skip_bad_lines=skip)
        try:
            pairs = list(read(directory, stats))
        except CorpusError as e:
            assert any(str(directory / name) in str(e) for name in names), e
            # Skipping only leaves the errors no skip can fix: unaligned parallel files, and
            # a compressed stream damaged (random bytes that start like gzip, bz2 or xz).
            assert not skip or fmt == "parallel" or "compressed data is damaged" in str(e), e
            return None
    for source, target in pairs:
        assert isinstance(source, str) and isinstance(target, str)
        assert source.strip() and target.strip()
    assert stats.pairs_read == len(pairs) + sum(stats.dropped.values())
    assert skip or stats.bad_lines == 0
    return pairs


def consecutive(texts: list[str]) -> list[TextPair]:
    """The format's rule for conversations: each turn with the next, empty sides dropped."""
    return [(s, t) for s, t in zip(texts, texts[1:], strict=False) if s.strip() and t.strip()]


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Replace ``length`` bytes at ``position`` (both modulo the size) by ``insert``."""
    for position, length, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + length % 4:]
    return data


EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3),
                           st.binary(max_size=3) | st.sampled_from([b"\t", b"\n", b"\xff", b"'"])),
                 min_size=1, max_size=3)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
WORDS = st.text(st.characters(codec="latin-1", exclude_characters="\n\r+'"), max_size=12)


# -- random bytes --------------------------------------------------------------------------

@FUZZ
@pytest.mark.parametrize("fmt", list(READERS))
@given(data=st.data(), skip=st.booleans())
def test_random_bytes_give_an_error_a_skip_or_pairs(fmt: str, data, skip: bool) -> None:
    names, _ = READERS[fmt]
    contents = {name: data.draw(st.binary(max_size=200), label=name) for name in names}
    outcome(fmt, contents, skip)


# -- line formats: the parse is checked against the format itself --------------------------

def line_pairs(lines: list[bytes]) -> tuple[list[TextPair], int]:
    """TSV as specified: UTF-8 lines of exactly one TAB; (pairs, malformed lines)."""
    pairs, bad = [], 0
    for i, raw in enumerate(lines):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            bad += 1
            continue
        if i == 0:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        sides = line.split("\t")
        if len(sides) != 2:
            bad += 1
        elif sides[0].strip() and sides[1].strip():
            pairs.append((sides[0], sides[1]))
    return pairs, bad


TSV_LINE = st.one_of(
    st.tuples(TEXT, TEXT).map(lambda p: f"{p[0]}\t{p[1]}".encode()),  # mostly valid
    st.binary(max_size=20),  # anything: no TAB, two TABs, bad UTF-8, a lone \r
)


@FUZZ
@given(lines=st.lists(TSV_LINE, max_size=8), skip=st.booleans())
@example(lines=[b"(\xb5/\xfd"], skip=True)  # zstd's magic number: a damaged zstd stream
def test_tsv_parses_exactly_what_the_format_says(lines: list[bytes], skip: bool) -> None:
    content = b"\n".join(lines)
    expected, bad = line_pairs(content.split(b"\n"))
    pairs = outcome("tsv", {"pairs.tsv": content}, skip)
    if compression_of(content) is not None:  # it starts as a compressed stream: a damaged one
        assert pairs is None
    elif bad and not skip:
        assert pairs is None
    else:
        assert pairs == expected


@FUZZ
@given(sides=st.lists(st.tuples(TEXT, TEXT), max_size=6), extra=st.integers(0, 2),
       edits=st.none() | EDITS, skip=st.booleans())
def test_parallel_files_pair_line_by_line(sides, extra: int, edits, skip: bool) -> None:
    source = "".join(f"{s.replace(chr(10), ' ')}\n" for s, _ in sides).encode()
    target = "".join(f"{t.replace(chr(10), ' ')}\n" for _, t in sides).encode() + b"x\n" * extra
    if edits is not None:
        source = mutate(source, edits)
    pairs = outcome("parallel", {"src.txt": source, "tgt.txt": target}, skip)
    if edits is None and extra == 0:
        expected = [(s, t) for s, t in zip(*[
            [line.rstrip("\r") for line in f.decode().split("\n")[:-1]] for f in (source, target)
        ], strict=True) if s.strip() and t.strip()]
        assert pairs == expected
    elif edits is None:
        assert pairs is None  # unaligned files are an error even when skipping


# -- structured formats: built valid (exact parse), then mutated (any allowed outcome) -----

CONVERSATIONS = st.lists(st.lists(TEXT, max_size=5), max_size=4)


@FUZZ
@given(convs=CONVERSATIONS, edits=st.none() | EDITS, skip=st.booleans())
def test_chatterbot_yaml(convs: list[list[str]], edits, skip: bool) -> None:
    content = yaml.safe_dump({"conversations": convs}, allow_unicode=True).encode()
    pairs = outcome("chatterbot", {"corpus.yml": mutate(content, edits or [])}, skip)
    if edits is None:
        # What YAML reads back (a NEL or U+2028 inside a statement is a line break to it)
        read_back = yaml.safe_load(content)["conversations"]
        assert pairs == [p for conv in read_back for p in consecutive(conv)]


@FUZZ
@given(convs=st.lists(st.lists(st.lists(TEXT, min_size=1, max_size=3), max_size=4), max_size=3),
       edits=st.none() | EDITS, skip=st.booleans())
def test_chitchat_json(convs: list[list[list[str]]], edits, skip: bool) -> None:
    doc = {f"c{i}": {"messages": [[{"text": u} for u in message] for message in conv]}
           for i, conv in enumerate(convs)}
    content = json.dumps(doc).encode()
    pairs = outcome("chitchat", {"dataset.json": mutate(content, edits or [])}, skip)
    if edits is None:
        assert pairs == [p for conv in convs for p in consecutive([" ".join(m) for m in conv])]


@FUZZ
@given(utterances=st.lists(st.tuples(st.integers(0, 6), TEXT, st.none() | st.integers(0, 6)),
                           max_size=8),
       edits=st.none() | EDITS, skip=st.booleans())
def test_convokit_jsonl(utterances, edits, skip: bool) -> None:
    lines = [json.dumps({"id": f"u{i}", "text": text, "reply-to": None if to is None else f"u{to}"})
             for i, text, to in utterances]
    content = "\n".join(lines).encode()
    pairs = outcome("convokit", {"utterances.jsonl": mutate(content, edits or [])}, skip)
    if edits is None:
        texts = {f"u{i}": text for i, text, _ in utterances}  # a repeated id: the last text
        expected = [(texts[f"u{to}"], texts[f"u{i}"]) for i, _, to in utterances
                    if to is not None and f"u{to}" in texts]
        assert pairs == [(s, t) for s, t in expected if s.strip() and t.strip()]


@FUZZ
@given(lines=st.lists(WORDS, max_size=6), convs=st.lists(st.lists(st.integers(0, 7), max_size=4),
                                                           max_size=3),
       edits=st.none() | EDITS, skip=st.booleans())
def test_cornell(lines: list[str], convs: list[list[int]], edits, skip: bool) -> None:
    movie_lines = "".join(f"L{i}{CORNELL_SEP}u0{CORNELL_SEP}m0{CORNELL_SEP}A{CORNELL_SEP}{text}\n"
                          for i, text in enumerate(lines)).encode("latin-1")
    conversations = "".join(
        f"u0{CORNELL_SEP}u1{CORNELL_SEP}m0{CORNELL_SEP}{[f'L{i}' for i in conv]}\n"
        for conv in convs).encode("latin-1")
    pairs = outcome("cornell", {"movie_lines.txt": mutate(movie_lines, edits or []),
                                "movie_conversations.txt": conversations}, skip)
    if edits is None:
        expected = []
        for conv in convs:  # a line id missing from the lines file loses its pairs
            for s, t in zip(conv, conv[1:], strict=False):
                if s < len(lines) and t < len(lines) and lines[s].strip() and lines[t].strip():
                    expected.append((lines[s], lines[t]))
        assert pairs == expected


# -- cases random generation is unlikely to hit ----------------------------------------------

@pytest.mark.parametrize(("fmt", "name", "content"), [
    ("chitchat", "dataset.json", b"[" * 100_000),
    ("chitchat", "dataset.json", b'{"c": ' + b"1" * 5000 + b"}"),  # past int's digit limit
    ("chatterbot", "corpus.yml", b'conversations:\n- - "\\U0011ffff"\n  - x\n'),  # no such char
    ("chatterbot", "corpus.yml", b"conversations:\n- - 2001-13-01\n  - x\n"),  # no such date
    ("convokit", "utterances.jsonl", b"{\"id\": " + b"[" * 100_000),
    ("chatterbot", "corpus.yml", b"conversations:\n" + b"- " * 50_000 + b"x\n"),
    ("cornell", "movie_conversations.txt",
     f"u0{CORNELL_SEP}u1{CORNELL_SEP}m0{CORNELL_SEP}".encode() + b"[" * 100_000 + b"\n"),
])
@pytest.mark.parametrize("skip", [False, True])
def test_input_the_parsers_choke_on_is_a_bad_line(fmt: str, name: str, content: bytes,
                                                  skip: bool) -> None:
    names, _ = READERS[fmt]
    contents = dict.fromkeys(names, b"") | {name: content}
    assert outcome(fmt, contents, skip) in (None, [])
