"""``padless chat``, ``translate`` and ``evaluate`` on a tiny prepared corpus and a tiny model."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import pytest
import sacrebleu
import torch

from padless.batch import Batch
from padless.chat import answer
from padless.checkpoint import load_model, read_run_info
from padless.cli import main
from padless.dataset import PreparedData
from padless.evaluate import corpus_loss, evaluate
from padless.predict import decode_ids, decode_texts
from padless.search import SearchOptions
from padless.vocabulary import BOS_ID, EOS_ID, PAD_ID

QUESTIONS = [
    "hello there", "how are you ?", "what is your name ?", "where do you live ?",
    "do you like music ?", "good morning", "see you tomorrow", "what time is it ?",
    "are you a robot ?", "tell me a joke", "i am tired today", "it is raining again",
]
ANSWERS = [
    "hi !", "fine , thanks .", "my name is bot .", "in a computer .", "yes , i like jazz .",
    "good morning to you", "bye , see you .", "it is late .", "maybe i am .",
    "no jokes today .", "go to sleep then .", "take an umbrella .",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset of a few dozen pairs."""
    root = tmp_path_factory.mktemp("data")
    corpus = root / "pairs.tsv"
    lines = [f"{q} {i}\t{a}" for i in range(4) for q, a in zip(QUESTIONS, ANSWERS, strict=True)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["prepare", str(corpus), "--format", "tsv", "--out", str(root / "prepared"),
                 "--valid-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    return root / "prepared"


@pytest.fixture(scope="module")
def run_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of `padless train`: a tiny model after one step (nearly random)."""
    root = tmp_path_factory.mktemp("run") / "run"
    tiny = ["model.embedding_size=16", "model.hidden_size=16", "model.num_layers=1",
            "model.dropout=0.0", "train.max_tokens=256", "train.precision=fp32"]
    argv = ["train", "--data", str(data_dir), "--out", str(root), "--max-steps", "1"]
    assert main(argv + [f"--set={kv}" for kv in tiny]) == 0
    return root


def run_cli(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``padless ARGV < stdin`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))  # not a TTY: the scripted mode
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_chat_answers_unknown_words_and_empty_lines_one_line_each(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = "hello there\nzyxxy qwertz blorp\n\n   \nhow are you ?\nquit\nnot answered\n"
    code, out, err = run_cli(["chat", str(run_dir), "--device", "cpu"], stdin, monkeypatch,
                             capsys)
    assert code == 0
    assert len(out.splitlines()) == 5  # one per input line before `quit`
    assert "nothing to answer" in err


def test_chat_beam_and_seeded_sampling(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = "hello there\nwhat is your name ?\n"
    code, beam_out, _ = run_cli(["chat", str(run_dir), "--beam", "3", "--max-length", "8"], stdin,
                                monkeypatch, capsys)
    assert code == 0 and len(beam_out.splitlines()) == 2
    sample = ["chat", str(run_dir), "--sample", "--temperature", "1.5", "--top-p", "0.9",
              "--seed", "7", "--max-length", "8"]
    outputs = [run_cli(sample, stdin * 5, monkeypatch, capsys)[1] for _ in range(2)]
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 10


def test_chat_truncates_long_input_with_a_notice(run_dir: Path) -> None:
    model, text, _ = load_model(run_dir, device="cpu")
    reply, notice = answer(model, text, "hello " * 80, SearchOptions(), max_input_length=10)
    assert reply is not None
    assert "truncated to its first 10 of 80 tokens" in notice
    assert answer(model, text, "", SearchOptions())[0] is None


def test_translate_keeps_input_order(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["what is your name ?", "hi", "", "where do you live today my friend ?",
             "tell me a joke", "good morning", "unknownword"]
    code, out, err = run_cli(
        ["translate", str(run_dir), "--batch-size", "2", "--beam", "2", "--max-length", "10"],
        "\n".join(lines) + "\n", monkeypatch, capsys,
    )
    assert code == 0
    model, text, _ = load_model(run_dir, device="cpu")
    options = SearchOptions(method="beam", beam_size=2, max_length=10)
    alone = [decode_texts(model, text, [line], options)[0] for line in lines]
    assert out.splitlines() == alone
    assert "sent" in err  # the progress bar went to stderr
    assert out.splitlines()[2] == ""


def test_decode_ids_batches_equal_one_at_a_time(run_dir: Path) -> None:
    model, text, _ = load_model(run_dir, device="cpu")
    sources = [text.encode(q) for q in QUESTIONS]
    batched = decode_ids(model, sources, SearchOptions(), batch_size=5)
    for source, nbest in zip(sources, batched, strict=True):
        ((single,),) = decode_ids(model, [source], SearchOptions())
        assert nbest[0].tokens == single.tokens
        assert nbest[0].score == pytest.approx(single.score, abs=1e-5)


def test_evaluate_bleu_matches_sacrebleu_and_loss_is_per_token(data_dir: Path,
                                                               run_dir: Path) -> None:
    model, text, _ = load_model(run_dir, device="cpu")
    pairs = PreparedData.load(data_dir).splits["test"]
    result = evaluate(model, text, pairs, SearchOptions(), batch_size=4, n_samples=3)

    outputs = [text.decode(nb[0].tokens) for nb in decode_ids(model, [s for s, _ in pairs],
                                                               SearchOptions())]
    references = [text.decode(t) for _, t in pairs]
    assert result.bleu == pytest.approx(sacrebleu.corpus_bleu(outputs, [references]).score)
    assert result.chrf == pytest.approx(sacrebleu.corpus_chrf(outputs, [references]).score)
    assert [s[1] for s in result.samples] == outputs[:3]
    assert [s[2] for s in result.samples] == references[:3]

    # the loss is the per-token mean over all pairs, whatever the batching
    total, n_tokens = 0.0, 0
    for pair in pairs:
        batch = Batch.from_pairs([pair], pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
        with torch.no_grad():
            out = model.loss(batch, reduction="sum")
        total, n_tokens = total + float(out.loss), n_tokens + out.n_tokens
    assert result.n_tokens == n_tokens
    assert result.loss == pytest.approx(total / n_tokens, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert corpus_loss(model, pairs, batch_size=1)[0] == pytest.approx(result.loss, rel=1e-5)


def test_evaluate_command_reports_and_plots_attention(
    data_dir: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    png = tmp_path / "attention.png"
    code, out, _ = run_cli(
        ["evaluate", str(run_dir), "--data", str(data_dir), "--split", "valid", "--beam", "2",
         "--attention-plot", str(png), "--input", "how are you today ?"], "", monkeypatch, capsys,
    )
    assert code == 0
    assert "BLEU" in out and "chrF" in out and "perplexity" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_finds_the_data_the_run_was_trained_on(
    data_dir: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert read_run_info(run_dir) == {"data_dir": str(data_dir.resolve())}
    code, out, _ = run_cli(["evaluate", str(run_dir), "--limit", "2"], "", monkeypatch, capsys)
    assert code == 0
    assert "test:" in out and "BLEU" in out


def test_evaluate_without_recorded_data_says_what_is_missing(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "run.json").unlink()
    code, _, err = run_cli(["evaluate", str(copy)], "", monkeypatch, capsys)
    assert code == 2
    assert "--data" in err


@pytest.mark.parametrize("option", [["--temperature", "0"], ["--top-p", "1.5"],
                                    ["--max-length", "0"]])
def test_chat_rejects_bad_search_options_before_starting(
    run_dir: Path, option: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(["chat", str(run_dir), "--sample", *option], "hi\n", monkeypatch,
                             capsys)
    assert code == 2 and out == ""
    assert "bad search option" in err


def test_commands_never_answer_empty_or_with_unk_unless_asked() -> None:
    from padless.model import ModelConfig, Seq2Seq
    from padless.vocabulary import UNK_ID

    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embedding_size=8, hidden_size=8, dropout=0.0), 10).eval()
    with torch.no_grad():  # a model that would rather say <unk>, or nothing at all
        model.decoder.out.bias[UNK_ID] += 20.0
        model.decoder.out.bias[EOS_ID] += 10.0
    sources = [[4, 5, 6], [7, 8]]
    for method in ("greedy", "beam"):
        default = decode_ids(model, sources, SearchOptions(method=method, max_length=5))
        assert all(nbest[0].tokens and UNK_ID not in nbest[0].tokens for nbest in default)
        free = decode_ids(model, sources, SearchOptions(method=method, max_length=5,
                                                        min_length=0, allow_unk=True))
        assert all(nbest[0].tokens == [UNK_ID] * 5 for nbest in free)
