"""Corpus readers: each turns one public format into a stream of ``(source, target)`` texts.

Every reader takes a ``ReadStats`` that counts what was dropped and why, and decides what
a malformed line does: raise a ``CorpusError`` naming the file and line, or (with
``--skip-bad-lines``) count it and go on. Texts come out raw; normalisation is later.

Formats:

- ``cornell``: Cornell Movie-Dialogs (original release): ``movie_lines.txt`` and
  ``movie_conversations.txt``, fields separated by `` +++$+++ ``, ISO-8859-1.
- ``convokit``: a ConvoKit ``utterances.jsonl``; pairs are (replied-to, reply).
- ``chitchat``: the Chit Chat Challenge dataset bundled with the ``chitchat-dataset``
  package (or a JSON file in its format); pairs are consecutive messages.
- ``chatterbot``: chatterbot-corpus YAML (``conversations:`` lists), a file or a folder.
- ``tsv``: ``source<TAB>target`` per line.
- ``parallel``: two line-aligned plain-text files (source, target), e.g. for translation.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from itertools import zip_longest
from pathlib import Path

from padless.data.reader_base import (
    EXAMPLES,
    CorpusError,
    ReadStats,
    TextPair,
    consecutive_pairs,
    count_pair,
    decoded_lines,
    format_suffix,
    read_text,
    text_lines,
)
from padless.runtime.yaml_text import YamlProblem, load_yaml

__all__ = [
    "FORMATS",
    "CorpusError",
    "ReadStats",
    "chitchat_path",
    "detect_format",
    "read_chatterbot",
    "read_chitchat",
    "read_convokit",
    "read_cornell",
    "read_corpus",
    "read_parallel",
    "read_tsv",
]

FORMATS = ("cornell", "convokit", "chitchat", "chatterbot", "tsv", "parallel")
CORNELL_SEP = " +++$+++ "
CORNELL_ENCODING = "iso-8859-1"
CORNELL_FILES = ("movie_lines.txt", "movie_conversations.txt")
# The line ids of a conversation, as the corpus writes them: ['L194', 'L195', 'L196']
_CORNELL_ID = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_CORNELL_IDS = re.compile(rf"\[\s*(?:(?:{_CORNELL_ID.pattern})\s*(?:,\s*|(?=\])))*\]")
# Suffixes that say a file is a corpus of its own, never one side of a parallel pair
_PAIR_SUFFIXES = {".tsv": "tsv", ".json": "chitchat", ".jsonl": "convokit", ".yml": "chatterbot",
                  ".yaml": "chatterbot"}
_MISSING = object()


def _parse_json(text: str) -> tuple[object, str | None, int | None]:
    """``(value, None, None)``, or ``(_MISSING, what is wrong, line)`` for text that is not
    JSON (the line within ``text``, when known)."""
    try:
        return json.loads(text), None, None
    except json.JSONDecodeError as e:
        return _MISSING, f"broken JSON ({e.msg} at column {e.colno})", e.lineno
    except RecursionError:
        return _MISSING, "JSON nested too deeply", None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        return _MISSING, f"broken JSON ({e})", None


# -- Cornell Movie-Dialogs -----------------------------------------------------------------


def _cornell_fields(line: str, n: int) -> list[str] | None:
    fields = line.split(CORNELL_SEP, n - 1)
    if len(fields) == n - 1 and line.endswith(CORNELL_SEP.rstrip()):
        # An editor that strips trailing spaces turns "... +++$+++ " (empty text) into this.
        fields[-1] = fields[-1].removesuffix(CORNELL_SEP.rstrip())
        fields.append("")
    return fields if len(fields) == n else None


def read_cornell(directory: str | os.PathLike, stats: ReadStats) -> Iterator[TextPair]:
    """Consecutive utterances of each Cornell conversation.

    ``directory`` holds the two files (either of the files themselves is accepted too).
    The lines file is read into a dict (conversations look lines up by id); the
    conversations file is streamed. A conversation naming a line id that is not in the
    lines file loses the pairs touching it; the count and first examples are reported.
    """
    directory = Path(directory)
    if directory.name in CORNELL_FILES:
        directory = directory.parent
    lines_path = directory / "movie_lines.txt"
    conv_path = directory / "movie_conversations.txt"
    texts: dict[str, str] = {}
    for lineno, line in text_lines(lines_path, stats, CORNELL_ENCODING):
        if not line.strip():
            continue
        fields = _cornell_fields(line, 5)
        if fields is None:
            stats.bad(lines_path, lineno, f"expected 5 fields separated by {CORNELL_SEP.strip()!r}")
            continue
        texts[fields[0].strip()] = fields[4]
    for lineno, line in text_lines(conv_path, stats, CORNELL_ENCODING):
        if not line.strip():
            continue
        fields = _cornell_fields(line, 4)
        # A pattern, not a Python parser: a malicious or deeply nested field costs nothing.
        if fields is None or not _CORNELL_IDS.fullmatch(fields[3].strip()):
            stats.bad(conv_path, lineno, "expected 4 fields ending in a list like ['L1', 'L2']")
            continue
        ids = [single or double for single, double in _CORNELL_ID.findall(fields[3])]
        for i in ids:
            if i not in texts:
                stats.missing_ids += 1
                if stats.missing_ids <= EXAMPLES:
                    stats.note(f"{conv_path}:{lineno}: line id {i} is not in {lines_path.name}")
        yield from consecutive_pairs(stats, [texts.get(i) for i in ids])


# -- ConvoKit ------------------------------------------------------------------------------


def read_convokit(path: str | os.PathLike, stats: ReadStats) -> Iterator[TextPair]:
    """(replied-to utterance, reply) pairs from a ConvoKit ``utterances.jsonl``.

    ``path`` is the file or the corpus folder holding it. Replies may come before what
    they reply to, so all texts are read first; pairs come out in the replies' file order.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "utterances.jsonl"
    texts: dict[str, str] = {}
    replies: list[tuple[str, str, int]] = []  # (id, replied-to id, line number)
    for lineno, line in text_lines(path, stats):
        if not line.strip():
            continue
        utt, problem, _ = _parse_json(line)
        if problem is not None:
            stats.bad(path, lineno, problem)
            continue
        if not isinstance(utt, dict) or "id" not in utt or not isinstance(utt.get("text"), str):
            stats.bad(path, lineno, "expected a JSON object with 'id' and 'text'")
            continue
        uid = str(utt["id"])
        texts[uid] = utt["text"]
        if utt.get("reply-to") is not None:
            replies.append((uid, str(utt["reply-to"]), lineno))
    for uid, parent, lineno in replies:
        if parent not in texts:
            stats.pairs_read += 1
            stats.drop("missing utterance")
            stats.note(f"{path}:{lineno}: replies to {parent!r}, which is not in the file")
            continue
        pair = count_pair(stats, texts[parent], texts[uid])
        if pair:
            yield pair


# -- chitchat ------------------------------------------------------------------------------


def chitchat_path() -> Path:
    """The ``dataset.json`` shipped inside the ``chitchat_dataset`` package."""
    return Path(str(resources.files("chitchat_dataset").joinpath("dataset.json")))


def read_chitchat(path: str | os.PathLike | None, stats: ReadStats) -> Iterator[TextPair]:
    """Consecutive messages of each chitchat conversation (bundled corpus when ``path`` is None).

    A message is a list of utterances sent in a row; they are joined with a space.
    """
    path = chitchat_path() if path is None else Path(path)
    text = read_text(path, stats)
    if text is None:
        return
    data, problem, lineno = _parse_json(text)
    if problem is not None:
        stats.bad(path, lineno, problem)
        return
    if not isinstance(data, dict):
        stats.bad(path, None, "expected a JSON object of conversations")
        return
    for conv_id, conv in data.items():
        try:
            messages = [" ".join(u["text"] for u in m) for m in conv["messages"]]
        except (KeyError, TypeError):
            stats.bad(path, None, f"conversation {conv_id!r}: expected messages of {{'text'}}")
            continue
        yield from consecutive_pairs(stats, messages)


# -- chatterbot YAML -----------------------------------------------------------------------


def read_chatterbot(path: str | os.PathLike, stats: ReadStats) -> Iterator[TextPair]:
    """Consecutive statements of each chatterbot-corpus conversation (a file or a folder)."""
    path = Path(path)
    files = sorted([*path.glob("**/*.yml"), *path.glob("**/*.yaml")]) if path.is_dir() else [path]
    if not files:
        raise CorpusError(f"{path}: no .yml or .yaml files")
    for file in files:
        text = read_text(file, stats)
        if text is None:
            continue
        try:
            doc = load_yaml(text)
        except YamlProblem as e:
            stats.bad(file, e.line, f"broken YAML ({e})")
            continue
        convs = doc.get("conversations") if isinstance(doc, dict) else None
        if not isinstance(convs, list):
            stats.bad(file, None, "expected a 'conversations:' list")
            continue
        for k, conv in enumerate(convs, 1):
            if not isinstance(conv, list) or any(isinstance(s, list | dict) for s in conv):
                stats.bad(file, None, f"conversation {k}: expected a list of statements")
                continue
            # YAML reads "- 42" as a number and "- yes" as a bool; they are still statements.
            yield from consecutive_pairs(stats, ["" if s is None else str(s) for s in conv])


# -- TSV and parallel text -----------------------------------------------------------------


def read_tsv(path: str | os.PathLike, stats: ReadStats) -> Iterator[TextPair]:
    """One ``source<TAB>target`` pair per line; blank lines are ignored."""
    path = Path(path)
    for lineno, line in text_lines(path, stats):
        if not line.strip():
            continue
        sides = line.split("\t")
        if len(sides) != 2:
            problem = "no TAB" if len(sides) == 1 else f"{len(sides) - 1} TABs"
            stats.bad(path, lineno, f"expected 'source<TAB>target', found {problem}")
            continue
        pair = count_pair(stats, *sides)
        if pair:
            yield pair


def read_parallel(
    source_path: str | os.PathLike, target_path: str | os.PathLike, stats: ReadStats
) -> Iterator[TextPair]:
    """Line ``i`` of the source file paired with line ``i`` of the target file.

    Files of different lengths are an error even with ``--skip-bad-lines``: every pair
    after the first missing line could be misaligned.
    """
    source = decoded_lines(Path(source_path), stats)
    target = decoded_lines(Path(target_path), stats)
    for src, tgt in zip_longest(source, target):
        if src is None or tgt is None:
            short, long_, (lineno, _) = (
                (source_path, target_path, tgt) if src is None else (target_path, source_path, src)
            )
            raise CorpusError(
                f"{short}: ends before line {lineno} of {long_}; "
                "parallel files must have the same number of lines"
            )
        if src[1] is None or tgt[1] is None:
            continue  # undecodable; already reported (and skipped, or it raised)
        pair = count_pair(stats, src[1], tgt[1])
        if pair:
            yield pair


# -- dispatch ------------------------------------------------------------------------------


def detect_format(corpus: list[str]) -> str:
    """Guess the format from the corpus arguments (name, two files, folder contents, suffix)."""
    if corpus == ["chitchat"] and not Path("chitchat").exists():
        return "chitchat"
    if len(corpus) == 2:
        for name in corpus:
            if format_suffix(name) in _PAIR_SUFFIXES:
                raise CorpusError(
                    f"{name}: a {_PAIR_SUFFIXES[format_suffix(name)]} corpus holds pairs "
                    "already; two files are read as one parallel corpus (line-aligned plain "
                    "text): give one corpus, or pass --format parallel if that is what they are"
                )
        return "parallel"
    if len(corpus) != 1:
        raise CorpusError(f"expected one corpus (or two parallel files), got {len(corpus)}")
    path = Path(corpus[0])
    if path.is_dir():
        if (path / "movie_lines.txt").exists():
            return "cornell"
        if (path / "utterances.jsonl").exists():
            return "convokit"
        if any(path.glob("**/*.yml")) or any(path.glob("**/*.yaml")):
            return "chatterbot"
        raise CorpusError(f"{path}: cannot tell the corpus format; pass --format")
    if not path.exists():
        if path.is_symlink():  # exists() follows it: a loop or a missing target
            raise CorpusError(f"{path}: a symbolic link that leads nowhere (a loop, or its "
                              "target is missing)")
        raise CorpusError(f"{path}: no such file or directory")
    if path.name in CORNELL_FILES:
        return "cornell"
    by_suffix = {**_PAIR_SUFFIXES, ".txt": "tsv"}
    if format_suffix(path) in by_suffix:
        return by_suffix[format_suffix(path)]
    raise CorpusError(f"{path}: cannot tell the corpus format from its name; pass --format")


def read_corpus(corpus: list[str], fmt: str, stats: ReadStats) -> Iterable[TextPair]:
    """Dispatch to the reader of ``fmt`` (``auto`` detects it, see :func:`detect_format`)."""
    if fmt == "auto":
        fmt = detect_format(corpus)
    if fmt == "parallel":
        if len(corpus) != 2:
            raise CorpusError("--format parallel takes two files: SOURCE_FILE TARGET_FILE")
        return read_parallel(corpus[0], corpus[1], stats)
    if len(corpus) != 1:
        raise CorpusError(f"--format {fmt} takes one corpus, got {len(corpus)}")
    if fmt == "chitchat":
        return read_chitchat(None if corpus[0] == "chitchat" else corpus[0], stats)
    readers = {"cornell": read_cornell, "convokit": read_convokit,
               "chatterbot": read_chatterbot, "tsv": read_tsv}
    if fmt not in readers:
        raise CorpusError(f"unknown format {fmt!r}; choose from auto, {', '.join(FORMATS)}")
    return readers[fmt](corpus[0], stats)
