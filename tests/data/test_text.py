"""Normalisation, tokenizers and the TextProcessor (encode/decode, save/load)."""

import pytest

from padless.data.text import (
    SentencePieceTokenizer,
    TextProcessor,
    WordTokenizer,
    normalize_default,
    normalize_none,
    normalize_tutorial,
    train_sentencepiece,
)
from padless.data.vocabulary import BOS_ID, EOS_ID, PAD_ID, UNK, UNK_ID, Vocabulary


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world !"),
        ("Aren't you   Ça va?!", "aren t you ca va ? !"),
        ("  Mr. Smith -- 42 times...  ", "mr . smith times . . ."),
        ("Привет, мир!", "!"),  # the tutorial erases whole scripts
        ("", ""),
    ],
)
def test_tutorial_normalisation_matches_the_tutorial(raw: str, expected: str) -> None:
    assert normalize_tutorial(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world !"),
        ("Déjà vu?  C’est «génial»!", "déjà vu ? c'est génial !"),
        ("Straße über Äpfel", "straße über äpfel"),
        ("Привет, мир!", "привет мир !"),
        ("I'm 42 'quoted' dogs'", "i'm 42 quoted dogs"),
        ("ＦＵＬＬ１２", "full12"),  # NFKC folds full-width forms
        ("हिन्दी भाषा", "हिन्दी भाषा"),  # combining marks stay inside the word
        ("a\tb\nc", "a b c"),
        ("🙂🙂", ""),
    ],
)
def test_default_normalisation_keeps_unicode_letters(raw: str, expected: str) -> None:
    assert normalize_default(raw) == expected


def test_normalize_none_only_collapses_whitespace() -> None:
    assert normalize_none("  Hi,\tthere!\n") == "Hi, there!"


def test_word_tokenizer_round_trip() -> None:
    tok = WordTokenizer()
    assert tok.tokenize("how are you ?") == ["how", "are", "you", "?"]
    assert tok.detokenize(["i", "am", "fine", ".", "you", "?"]) == "i am fine. you?"


def _processor() -> TextProcessor:
    return TextProcessor(Vocabulary(["how", "are", "you", "?", "fine", "."]))


def test_encode_maps_unknown_words_to_unk() -> None:
    text = _processor()
    assert text.encode("How are YOU, Zorblax?") == [4, 5, 6, UNK_ID, 7]
    assert text.encode("") == []


def test_decode_stops_at_eos_and_skips_pad_and_bos() -> None:
    text = _processor()
    ids = [BOS_ID, 4, 5, PAD_ID, 6, UNK_ID, 7, EOS_ID, 8, 9]
    assert text.decode(ids) == f"how are you {UNK}?"


def test_unknown_normaliser_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown normaliser"):
        TextProcessor(Vocabulary(), normalize="shout")


def test_save_load_word_processor_into_any_directory(tmp_path) -> None:
    text = TextProcessor(Vocabulary(["ça", "va"]), normalize="tutorial")
    text.save(tmp_path / "run")
    loaded = TextProcessor.load(tmp_path / "run")
    assert loaded.normalize == "tutorial" and loaded.vocab == text.vocab
    assert loaded.encode("Ça va?") == text.encode("Ça va?")


def test_load_from_a_directory_without_a_processor_fails_clearly(tmp_path) -> None:
    with pytest.raises(ValueError, match="text.json: missing"):
        TextProcessor.load(tmp_path)


SENTENCES = [
    "how are you ?",
    "i am fine thank you .",
    "where are you going ?",
    "i am going home .",
    "what are you doing today ?",
    "nothing much , just reading .",
] * 20


def test_sentencepiece_ids_are_aligned_with_ours(tmp_path) -> None:
    tok = train_sentencepiece(SENTENCES, vocab_size=60, model_type="bpe")
    assert tok.pieces()[:4] == Vocabulary().tokens
    text = TextProcessor(Vocabulary(tok.pieces()[4:]), normalize="none", tokenizer=tok)
    ids = text.encode("where are you going today ?")
    assert UNK_ID not in ids and min(ids) > UNK_ID
    assert text.decode([BOS_ID, *ids, EOS_ID, 7]) == "where are you going today ?"
    text.save(tmp_path)
    loaded = TextProcessor.load(tmp_path)
    assert isinstance(loaded.tokenizer, SentencePieceTokenizer)
    assert loaded.encode("i am going home .") == text.encode("i am going home .")


def test_sentencepiece_training_is_reproducible() -> None:
    a = train_sentencepiece(SENTENCES, vocab_size=50, seed=1)
    b = train_sentencepiece(SENTENCES, vocab_size=50, seed=1)
    assert a.model_proto == b.model_proto
