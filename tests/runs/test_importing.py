"""``padless import``: a Hugging Face model folder becomes a run whose model computes what
``transformers`` computes (float64, 1e-9), decodes as ``generate`` does, and fine-tunes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from padless.cli import main
from padless.data.batch import Batch
from padless.data.dataset import PreparedData
from padless.decoding.beam import beam_search
from padless.decoding.greedy import greedy_search
from padless.decoding.options import SearchOptions
from padless.masking import pad_batch
from padless.models.scoring import corpus_scores
from padless.runs.checkpoint import Checkpoint
from padless.runs.importing import import_pretrained
from padless.runs.loading import load_model
from tests.helpers import HF_KINDS, assert_one_line_error, hf_model, write_reversal_dataset

pytest.importorskip("transformers")

SOURCES = ["the cat sat on the mat", "a dog", "hello there how are you ?", "un chien court"]
TARGETS = ["le chat est sur", "un chien court dans le parc", "fine", "a dog ran in the park"]
MAX_LENGTH = 24


@pytest.fixture(scope="module", params=HF_KINDS)
def imported(request, tmp_path_factory):
    """``(kind, the transformers model in float64, the imported run)``."""
    root = tmp_path_factory.mktemp(request.param)
    hf = hf_model(request.param, root / "hf").double()
    import_pretrained(root / "hf", root / "run")
    return request.param, hf, root / "run"


def test_the_imported_model_computes_the_models_log_probabilities(imported) -> None:
    """Teacher-forced, on a batch of sentences of different lengths (pads matter)."""
    kind, hf, run = imported
    model, text, config = load_model(run, device="cpu")
    model, specials = model.double(), text.vocab.specials
    pairs = [(text.encode(s), text.encode_target(t)) for s, t in zip(SOURCES, TARGETS,
                                                                       strict=True)]
    assert len({len(s) for s, _ in pairs}) > 1 and len({len(t) for _, t in pairs}) > 1
    batch = Batch.from_pairs(pairs, specials=specials, batch_first=True)
    with torch.no_grad():
        ours = torch.log_softmax(model.output(model.target_states(batch)), dim=-1)
        theirs = hf(input_ids=batch.src.masked_fill(~batch.src_mask, specials.pad),
                    attention_mask=batch.src_mask.long(),
                    decoder_input_ids=batch.tgt_in.masked_fill(~batch.tgt_mask, specials.pad),
                    decoder_attention_mask=batch.tgt_mask.long()).logits
    torch.testing.assert_close(ours, torch.log_softmax(theirs, dim=-1)[batch.tgt_mask],
                               rtol=0, atol=1e-9)
    assert config.norm_position == "post" and model.vocab_size == len(text.vocab)


def _generated(hf, text, **options) -> tuple[list[list[int]], list[list[int]]]:
    """``(padless's, transformers')`` answers to :data:`SOURCES`, up to EOS."""
    specials = text.vocab.specials
    src, lengths = pad_batch([text.encode(s) for s in SOURCES], specials.pad, batch_first=True)
    mask = torch.arange(src.shape[1])[None] < lengths[:, None]
    with torch.no_grad():
        rows = hf.generate(input_ids=src, attention_mask=mask.long(), do_sample=False,
                           max_new_tokens=MAX_LENGTH, bad_words_ids=[[specials.pad]],
                           forced_eos_token_id=None, min_length=0, no_repeat_ngram_size=0,
                           repetition_penalty=1.0, **options)
    theirs = []
    for row in rows.tolist():
        answer = row[1:]  # after the decoder's start
        theirs.append(answer[:answer.index(specials.eos)] if specials.eos in answer else
                      [t for t in answer if t != specials.pad])
    return src.t(), lengths, theirs


def test_greedy_answers_are_generates(imported) -> None:
    kind, hf, run = imported
    model, text, _ = load_model(run, device="cpu")
    src, lengths, theirs = _generated(hf, text, num_beams=1)
    result = greedy_search(model.double(), src, lengths,
                           SearchOptions.plain(max_length=MAX_LENGTH))
    ours = [nbest[0].tokens for nbest in result.hypotheses]
    assert ours == theirs
    assert any(len(a) < MAX_LENGTH for a in ours)  # some ended: EOS is compared too


def test_beam_answers_are_generates_without_a_length_penalty(imported) -> None:
    """With no length penalty the two rank hypotheses the same way (padless's GNMT penalty
    ``((5 + n) / 6) ** alpha`` and transformers' ``n ** length_penalty`` differ otherwise)."""
    kind, hf, run = imported
    model, text, _ = load_model(run, device="cpu")
    src, lengths, theirs = _generated(hf, text, num_beams=3, length_penalty=0.0,
                                      early_stopping=False)
    options = SearchOptions.plain("beam", beam_size=3, alpha=0.0, max_length=MAX_LENGTH)
    result = beam_search(model.double(), src, lengths, options)
    assert [nbest[0].tokens for nbest in result.hypotheses] == theirs


def test_the_run_translates_and_chats_with_the_models_tokenizer(imported, capsys,
                                                                monkeypatch) -> None:
    kind, hf, run = imported
    _, text, _ = load_model(run, device="cpu")
    src, lengths, theirs = _generated(hf, text, num_beams=1)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("\n".join(SOURCES) + "\n"))
    assert main(["translate", str(run), "--precision", "fp32", "--no-repeat-ngram", "0",
                 "--repetition-penalty", "1", "--min-length", "0", "--allow-unk",
                 "--max-length", str(MAX_LENGTH)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [text.decode(answer) for answer in theirs]


def test_the_command_says_what_it_imported(tmp_path: Path, capsys) -> None:
    hf_model("marian", tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "imported marian" in out and "parameters" in out
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["imported_from"] == str((tmp_path / "hf").resolve())


# -- bad input: one line, exit 2, nothing written --------------------------------------

@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("marian") / "hf"
    hf_model("marian", directory)
    return directory


def _broken(marian_dir: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(marian_dir, copy)
    change(copy)
    return copy


def _config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


BAD = {
    "not a folder": (lambda d: shutil.rmtree(d), "no such folder"),
    "no config.json": (lambda d: (d / "config.json").unlink(), "no config.json"),
    "unsupported model_type": (lambda d: _config(d, model_type="t5"),
                               "model_type 't5' is not one padless imports (it imports marian, "
                               "bart, blenderbot-small)"),
    "no tokenizer": (lambda d: [(d / n).unlink() for n in ("source.spm", "target.spm",
                                                            "vocab.json")],
                     "no tokenizer"),
    "weights that do not fit": (lambda d: _config(d, d_model=32, encoder_ffn_dim=64,
                                                  decoder_ffn_dim=64),
                                "has shape"),
    "truncated weights": (lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:5000]), "model.safetensors: truncated or damaged"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "no weights"),
    "different depths": (lambda d: _config(d, decoder_layers=1), "encoder_layers 2 and "
                                                                 "decoder_layers 1 differ"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_model_folders_are_one_line_and_write_nothing(marian_dir, tmp_path, capsys,
                                                          case) -> None:
    change, words = BAD[case]
    model = _broken(marian_dir, tmp_path, change)
    code = main(["import", str(model), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, capsys.readouterr().err, "import", words)
    assert not (tmp_path / "run").exists()


def test_an_out_with_files_is_refused_and_an_interrupted_import_leaves_nothing(
        marian_dir, tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    code = main(["import", str(marian_dir), "--out", str(tmp_path / "mine")])
    assert_one_line_error(code, capsys.readouterr().err, "import", "not an empty directory")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        import_pretrained(marian_dir, tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no run, no temporary


def _corpus(path: Path) -> Path:
    """Every source with every target: 16 distinct pairs."""
    path.write_text("".join(f"{s}\t{t}\n" for s in SOURCES for t in TARGETS), encoding="utf-8")
    return path


def test_a_vocabulary_over_65536_ids_is_stored_and_trained_as_int32(tmp_path, capsys) -> None:
    hf_model("marian", tmp_path / "hf", extra_tokens=70_000, train_steps=0, d_model=8,
             encoder_ffn_dim=8, decoder_ffn_dim=8, encoder_layers=1, decoder_layers=1)
    import_pretrained(tmp_path / "hf", tmp_path / "run")
    assert main(["prepare", str(_corpus(tmp_path / "pairs.tsv")), "--out",
                 str(tmp_path / "data"), "--text-from", str(tmp_path / "run")]) == 0
    meta = json.loads((tmp_path / "data" / "metadata.json").read_text())
    assert meta["store"]["train"]["dtype"] == "<i4" and meta["vocab_size"] > 65_536
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ft"),
                 "--init-from", str(tmp_path / "run"), "--max-steps", "2",
                 "--precision", "fp32"]) == 0
    assert Checkpoint.load(tmp_path / "ft" / "latest.pt").step == 2


def test_fine_tuning_refuses_what_does_not_fit_the_model_it_starts_from(
        marian_dir, tmp_path, capsys) -> None:
    import_pretrained(marian_dir, tmp_path / "run")
    other = write_reversal_dataset(tmp_path / "other")  # padless's own vocabulary
    start = ["--init-from", str(tmp_path / "run"), "--max-steps", "1"]
    code = main(["train", "--data", str(other), "--out", str(tmp_path / "ft"), *start])
    assert_one_line_error(code, capsys.readouterr().err, "train", f"{other}: its vocabulary "
                          f"is not that of {tmp_path / 'run'}", "--text-from")
    for extra, words in ((["--resume"], "give one of them"),
                         (["--config", "chatbot"], "but the model started from has"),
                         (["--set", "model.arch=gru"], "model.arch: 'gru', but the model "
                                                       "started from has 'transformer'"),
                         (["--set", "model.hidden_size=32"], "model.hidden_size: 32")):
        code = main(["train", "--data", str(other), "--out", str(tmp_path / "ft"), *start,
                     *extra])
        assert_one_line_error(code, capsys.readouterr().err, "train", words)
    assert not (tmp_path / "ft").exists()


def test_an_imported_model_exports_to_ctranslate2_with_the_same_greedy_answers(
        imported, tmp_path, capsys) -> None:
    """Marian and BART export (post-norm, their activations, positions and embedding norm);
    BlenderbotSmall's split embedding norm has no CTranslate2 counterpart and is refused."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    kind, _, run = imported
    code = main(["export", str(run), "--out", str(tmp_path / "ct2")])
    if kind == "blenderbot-small":
        assert_one_line_error(code, capsys.readouterr().err, "export",
                              "BlenderbotSmall's embedding norm")
        return
    assert code == 0
    model, text, _ = load_model(run, device="cpu")
    sources = [text.encode(s) for s in SOURCES]
    result = greedy_search(model, *pad_batch(sources, text.vocab.specials.pad),
                           SearchOptions.plain(max_length=MAX_LENGTH))
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    theirs = translator.translate_batch([text.vocab.decode(s) for s in sources], beam_size=1,
                                        max_decoding_length=MAX_LENGTH)
    assert [text.vocab.encode(t.hypotheses[0]) for t in theirs] == [
        nbest[0].tokens for nbest in result.hypotheses]


def test_a_fine_tune_lowers_the_validation_loss_and_resumes_exactly(marian_dir, tmp_path,
                                                                    capsys) -> None:
    import_pretrained(marian_dir, tmp_path / "run")
    data = tmp_path / "data"
    assert main(["prepare", str(_corpus(tmp_path / "pairs.tsv")), "--out", str(data),
                 "--text-from", str(tmp_path / "run"), "--valid-fraction", "0.25"]) == 0
    valid = PreparedData.load(data).splits["valid"]
    before = corpus_scores(load_model(tmp_path / "run", device="cpu")[0], valid).metrics()
    common = ["--data", str(data), "--precision", "fp32", "--set", "train.valid_every=4",
              "--set", "train.lr=3e-3", "--set", "train.warmup_steps=0",
              "--set", "train.max_tokens=64", "--set", "train.decay_steps=8"]
    start = ["--init-from", str(tmp_path / "run")]
    assert main(["train", *common, *start, "--out", str(tmp_path / "whole"),
                 "--max-steps", "8"]) == 0
    assert main(["train", *common, *start, "--out", str(tmp_path / "halves"),
                 "--max-steps", "4"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "halves"), "--resume",
                 "--max-steps", "8"]) == 0
    assert "starting from" in capsys.readouterr().out
    whole = Checkpoint.load(tmp_path / "whole" / "latest.pt")
    halves = Checkpoint.load(tmp_path / "halves" / "latest.pt")
    for name, tensor in whole.weights.items():
        assert torch.equal(tensor, halves.weights[name]), name
    after = corpus_scores(load_model(tmp_path / "whole", device="cpu")[0], valid).metrics()
    assert after["loss"] < before["loss"]


def test_an_imported_run_serves_in_continuous_batches_and_decodes_in_int8(
        marian_dir, tmp_path, capsys, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from padless.decoding.batched import decode_texts
    from padless.serving.server import load_app

    import_pretrained(marian_dir, tmp_path / "run")
    model, text, _ = load_model(tmp_path / "run", device="cpu")
    options = SearchOptions(max_length=MAX_LENGTH)
    app = load_app(tmp_path / "run", device="cpu", defaults=options, precision="fp32")
    with TestClient(app) as client:
        assert "greedy" in client.get("/v1/model").json()["continuous_batching"]
        response = client.post("/v1/translate", json={"lines": SOURCES})
    assert response.json()["translations"] == decode_texts(model, text, SOURCES, options)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("\n".join(SOURCES) + "\n"))
    assert main(["translate", str(tmp_path / "run"), "--quantize", "int8"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(SOURCES)
