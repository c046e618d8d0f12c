"""``padless export --format ctranslate2``: CTranslate2 decodes an exported run as padless does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ctranslate2
import pytest

from padless.cli import main
from padless.data.dataset import PreparedData
from padless.data.text import TextProcessor
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.runs.loading import load_model
from tests.helpers import AS_TRANSFORMER, TINY_TRAIN, assert_one_line_error, run_cli

pytestmark = pytest.mark.slow  # trains a small Transformer (a few seconds)

# two layers a stack (the export walks every layer), trained until it reverses some
TRAINED = [*TINY_TRAIN, *AS_TRANSFORMER, "model.num_layers=2", "model.tie_output=true",
           "train.log_every=100"]
MAX_LENGTH = 12


@pytest.fixture(scope="module")
def run_dir(reversal_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    argv = ["train", "--data", str(reversal_data_dir), "--out", str(out), "--max-steps", "400",
            *(f"--set={kv}" for kv in TRAINED)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ct2") / "model"
    assert main(["export", str(run_dir), "--format", "ctranslate2", "--out", str(out)]) == 0
    return out


def _sources(reversal_data_dir: Path) -> list[list[int]]:
    data = PreparedData.load(reversal_data_dir)
    return [source for split in ("valid", "test") for source, _ in data.splits[split]]


def test_greedy_answers_and_their_log_probs_equal_padless(
    run_dir: Path, exported: Path, reversal_data_dir: Path
) -> None:
    model, text, _ = load_model(run_dir, device="cpu")
    sources = _sources(reversal_data_dir)
    ours = [h[0] for h in decode_ids(model, sources, SearchOptions.plain(max_length=MAX_LENGTH),
                                     batch_size=8)]
    translator = ctranslate2.Translator(str(exported), device="cpu")
    tokens = [[text.vocab.id_to_token(i) for i in source] for source in sources]
    theirs = translator.translate_batch(tokens, beam_size=1, max_decoding_length=MAX_LENGTH)
    assert [r.hypotheses[0] for r in theirs] == [
        [text.vocab.id_to_token(i) for i in h.tokens] for h in ours]
    # the model learnt its task (a fair part of it), so that equal answers are not equal noise
    assert sum(h.tokens == s[::-1] for h, s in zip(ours, sources, strict=True)) > len(ours) // 4
    # the same log-probabilities token by token (EOS included where the answer ended)
    scored = translator.score_batch(tokens, [r.hypotheses[0] for r in theirs])
    for hypothesis, score in zip(ours, scored, strict=True):
        log_probs = score.log_probs if hypothesis.finished else score.log_probs[:-1]
        assert sum(log_probs) == pytest.approx(hypothesis.log_prob, abs=1e-4)


def test_the_directory_holds_the_runs_tokenizer_and_int8_weights_decode(
    run_dir: Path, exported: Path, tmp_path: Path, reversal_data_dir: Path
) -> None:
    assert TextProcessor.load(exported).vocab == load_model(run_dir, device="cpu")[1].vocab
    assert (exported / "model.bin").is_file() and (exported / "config.json").is_file()
    out = tmp_path / "int8"
    assert main(["export", str(run_dir), "--out", str(out), "--quantization", "int8"]) == 0
    text = TextProcessor.load(out)
    sources = _sources(reversal_data_dir)
    tokens = [[text.vocab.id_to_token(i) for i in source] for source in sources]
    results = ctranslate2.Translator(str(out)).translate_batch(tokens, beam_size=1)
    reversed_right = sum(r.hypotheses[0] == t[::-1] for r, t in zip(results, tokens, strict=True))
    assert reversed_right > len(tokens) // 4


def test_an_existing_directory_is_kept_unless_forced(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "model"
    assert run_cli(["export", str(run_dir), "--out", str(out)], None, monkeypatch,
                   capsys)[0] == 0
    (out / "model.bin").write_bytes(b"an older model")
    code, _, err = run_cli(["export", str(run_dir), "--out", str(out)], None, monkeypatch, capsys)
    assert_one_line_error(code, err, "export", "already exists", "--force")
    assert (out / "model.bin").read_bytes() == b"an older model"
    code, out_text, _ = run_cli(["export", str(run_dir), "--out", str(out), "--force"], None,
                                monkeypatch, capsys)
    assert code == 0 and "wrote" in out_text
    assert (out / "model.bin").read_bytes() != b"an older model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left beside it


@pytest.mark.parametrize("where", ["the run", "its parent", "a file"])
def test_force_never_replaces_the_run_itself_or_a_file(
    run_dir: Path, tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    out = {"the run": run_dir, "its parent": run_dir.parent, "a file": a_file}[where]
    before = sorted(p.name for p in run_dir.iterdir())
    code, _, err = run_cli(["export", str(run_dir), "--out", str(out), "--force"], None,
                           monkeypatch, capsys)
    if where == "a file":
        assert_one_line_error(code, err, "export", "notes.txt", "not a directory")
    else:
        assert_one_line_error(code, err, "export", "the run being exported", "another --out")
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize("where", ["its checkpoints", "its text", "another run",
                                   "its dataset", "a user's folder", "a folder of runs"])
def test_force_replaces_only_a_model_export_wrote(
    run_dir: Path, reversal_data_dir: Path, exported: Path, tmp_path: Path, where: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """``--force`` used to delete any folder: another run, the run's own checkpoints (then
    ``average`` failed), its dataset, a user's files."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "model.bin").write_bytes(b"mine")  # one name export writes, too
    (tmp_path / "runs" / "run-1").mkdir()
    out, words = {
        "its checkpoints": (run_dir / "checkpoints", "the run"),
        "its text": (run_dir / "text", "the run"),
        "another run": (exported.parent / "other-run", "the run"),
        "its dataset": (reversal_data_dir, "the prepared dataset"),
        "a user's folder": (tmp_path / "mine", "holds notes.txt"),
        "a folder of runs": (tmp_path / "runs", "holds run-1"),
    }[where]
    if where == "another run":
        out.mkdir(exist_ok=True)
        (out / "run.json").write_text('{"format": "padless-run"}')
        (out / "latest.pt").write_bytes(b"weights")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before or where == "its checkpoints"
    code, _, err = run_cli(["export", str(run_dir), "--out", str(out), "--force"], None,
                           monkeypatch, capsys)
    assert_one_line_error(code, err, "export", str(out), words, "another --out")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_failed_export_leaves_the_old_model(
    run_dir: Path, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    before = (out / "model.bin").read_bytes()

    def full_disk(self, directory: str) -> None:
        (Path(directory) / "model.bin").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ctranslate2.specs.TransformerSpec, "save", full_disk)
    assert main(["export", str(run_dir), "--out", str(out), "--force"]) == 2
    assert (out / "model.bin").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("Failed to write model.bin")])
def test_a_full_disk_in_export_names_the_folder(run_dir: Path, exported: Path, tmp_path: Path,
                                                failure: Exception,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A full disk used to say "No space left on device" without a file."""
    def full_disk(self, directory: str) -> None:
        raise failure

    monkeypatch.setattr(ctranslate2.specs.TransformerSpec, "save", full_disk)
    out = tmp_path / "model"
    code, _, err = run_cli(["export", str(run_dir), "--out", str(out)], None, monkeypatch,
                           capsys)
    assert_one_line_error(code, err, "export", str(out), str(failure.args[-1]))
    assert not out.exists()


def test_a_gru_run_is_refused(
    qa_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_cli(["export", str(qa_run_dir), "--out", str(tmp_path / "m")], None,
                           monkeypatch, capsys)
    assert_one_line_error(code, err, "export", "gru", "transformer")
    assert not (tmp_path / "m").exists()


def test_without_ctranslate2_the_error_names_the_extra(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ctranslate2" else real(name, *a))
    code, _, err = run_cli(["export", str(run_dir), "--out", str(tmp_path / "m")], None,
                           monkeypatch, capsys)
    assert_one_line_error(code, err, "export", "ctranslate2", "padless[export]")
