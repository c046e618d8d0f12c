"""Vocabulary: fixed special ids, deterministic building, UNK handling, JSON round-trip."""

import json

import pytest

from padless.data.vocabulary import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    UNK,
    UNK_ID,
    Vocabulary,
)


def test_special_ids_are_fixed() -> None:
    vocab = Vocabulary(["hello"])
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert vocab.tokens[:4] == [PAD, BOS, EOS, UNK]
    assert vocab.decode([0, 1, 2, 3]) == [PAD, BOS, EOS, UNK]
    assert len(vocab) == 5


def test_text_spelling_a_special_token_is_an_unknown_word() -> None:
    """``<pad>`` or ``</s>`` in a corpus (``--normalize none``) must not become PAD or EOS."""
    vocab = Vocabulary(["hello", PAD, EOS])  # specials among the words are skipped
    assert len(vocab) == 5
    assert vocab.encode([PAD, BOS, EOS, UNK, "hello"]) == [UNK_ID] * 4 + [4]
    assert vocab.token_to_id(EOS) == UNK_ID
    assert PAD not in vocab and EOS not in vocab and "hello" in vocab
    built = Vocabulary.build([["<s>", "<s>", "hi"]])
    assert built.tokens == [PAD, BOS, EOS, UNK, "hi"]


def test_build_orders_by_count_then_token_and_trims_rare() -> None:
    corpus = [["b", "a", "c"], ["a", "b"], ["a", "d"]]
    vocab = Vocabulary.build(corpus, min_count=2)
    assert vocab.tokens[4:] == ["a", "b"]  # a:3, b:2; c and d seen once
    assert Vocabulary.build(reversed(corpus)).tokens == Vocabulary.build(corpus).tokens
    assert len(Vocabulary.build(corpus, max_size=5)) == 5


def test_unknown_tokens_map_to_unk_and_never_raise() -> None:
    vocab = Vocabulary(["hello", "world"])
    assert vocab.encode(["hello", "never-seen", "world", ""]) == [4, UNK_ID, 5, UNK_ID]
    assert vocab.decode([4, UNK_ID, 5]) == ["hello", UNK, "world"]
    assert "hello" in vocab and "nope" not in vocab


def test_decode_rejects_ids_outside_the_vocabulary() -> None:
    with pytest.raises(IndexError, match="outside"):
        Vocabulary(["a"]).decode([5])


def test_round_trip_dict_and_file(tmp_path) -> None:
    vocab = Vocabulary(["ça", "va", "straße", "日本"])
    d = vocab.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON types
    assert Vocabulary.from_dict(d) == vocab
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.encode(["日本"]) == vocab.encode(["日本"])


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such vocabulary file"):
        Vocabulary.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "padless-vocabulary",\n "tokens": [', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json:2: not valid JSON"):
        Vocabulary.load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "padless-vocabulary", "tokens": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"wrong\.json: .*first tokens"):
        Vocabulary.load(wrong)
