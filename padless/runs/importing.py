"""A Hugging Face seq2seq model folder as a padless run: :func:`import_pretrained`.

``padless import MODEL_DIR --out RUN_DIR`` reads only the local folder (``config.json``,
``model.safetensors`` or ``pytorch_model.bin``, the tokenizer's files; padless never
downloads) and writes a run directory every command takes. The model becomes a padless
:class:`~padless.models.transformer.Transformer` with the variants its architecture needs
(:class:`~padless.models.config.ModelConfig`), weight for weight:

- the query, key and value projections are fused (``qkv``, ``key_value``); the keys' bias
  is left out, since ``q . (k + b)`` adds the same ``q . b`` to every key's score and the
  softmax cancels it exactly;
- ``final_logits_bias`` is the output layer's bias, tied to the shared embedding as the
  model's ``lm_head`` is;
- ids stay the model's own (:meth:`padless.data.vocabulary.Vocabulary.pretrained`), with
  its pad, decoder-start, EOS and UNK ids, so nothing is permuted and the outputs are the
  model's (tested against ``transformers``' forward and ``generate`` in float64).

The text pipeline travels with the run: its tokenizer
(:class:`padless.data.pretrained_tokenizer.PretrainedTokenizer`) is saved in ``text/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from padless.data.pretrained_tokenizer import PretrainedTokenizer, load_hf_tokenizer
from padless.data.text import TextProcessor
from padless.data.vocabulary import Specials
from padless.models import ModelConfig, build_model
from padless.runs.checkpoint import Checkpoint, text_settings
from padless.runs.directory import RunDirectory
from padless.runs.info import RunInfo, write_run_info
from padless.runs.weights import hf_state_dict
from padless.runtime.errors import UserError
from padless.runtime.files import atomic_directory, read_utf8, write_text_atomic
from padless.runtime.options import ConfigError

__all__ = ["ARCHITECTURES", "ImportedModel", "import_pretrained", "model_config"]

# model_type -> what it needs of padless's Transformer beyond its sizes
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "marian": {"positions": "sinusoidal_halves", "embedding_norm": "none"},
    "bart": {"positions": "learned", "position_offset": 2, "embedding_norm": "after_positions"},
    "blenderbot-small": {"positions": "learned", "position_offset": 0,
                         "embedding_norm": "split"},
}
_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "silu", "silu": "silu"}


@dataclass(frozen=True)
class ImportedModel:
    """What :func:`import_pretrained` wrote: the run, the architecture, its size."""

    run_dir: Path
    model_type: str
    config: ModelConfig
    vocab_size: int
    parameters: int


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such folder (a Hugging Face model folder, e.g. what "
                        "`huggingface-cli download NAME --local-dir DIR` writes)")
    if not path.is_file():
        raise UserError(f"{model_dir}: not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a model config (a JSON object)")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise UserError(f"{path}: model_type {model_type!r} is not one padless imports "
                        f"(it imports {', '.join(ARCHITECTURES)})")
    return config


def model_config(hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """The :class:`ModelConfig` of a Hugging Face config of a supported ``model_type``.

    Raises:
        UserError: naming the key that padless's Transformer cannot follow (different
            encoder and decoder sizes, an unknown activation, separate vocabularies).
    """
    def same(a: str, b: str) -> Any:
        if hf.get(a) != hf.get(b):
            raise UserError(f"{where}: {a} {hf.get(a)!r} and {b} {hf.get(b)!r} differ; padless's "
                            "Transformer has the same encoder and decoder sizes")
        return hf.get(a)

    activation = _ACTIVATIONS.get(hf.get("activation_function", "gelu"))
    if activation is None:
        raise UserError(f"{where}: activation_function {hf.get('activation_function')!r}; "
                        f"padless has {', '.join(sorted(_ACTIVATIONS))}")
    if not hf.get("share_encoder_decoder_embeddings", True) or hf.get(
            "decoder_vocab_size", hf.get("vocab_size")) != hf.get("vocab_size"):
        raise UserError(f"{where}: separate source and target vocabularies; padless imports "
                        "models with one shared vocabulary")
    kind = dict(ARCHITECTURES[hf["model_type"]])
    if kind["positions"] == "learned":
        kind["max_positions"] = int(hf.get("max_position_embeddings", 1024)) + kind[
            "position_offset"]
    size = hf.get("d_model")
    try:
        return ModelConfig(
            arch="transformer", embedding_size=size, hidden_size=size,
            num_layers=same("encoder_layers", "decoder_layers"),
            num_heads=same("encoder_attention_heads", "decoder_attention_heads"),
            ffn_size=same("encoder_ffn_dim", "decoder_ffn_dim"),
            dropout=float(hf.get("dropout", 0.1)), shared_embeddings=True,
            attention_dropout=float(hf.get("attention_dropout", 0.0)),
            activation_dropout=float(hf.get("activation_dropout", 0.0)),
            tie_output=bool(hf.get("tie_word_embeddings", True)), norm_position="post",
            activation=activation, embedding_scale=bool(hf.get("scale_embedding", False)),
            **kind)
    except ConfigError as e:
        raise UserError(f"{where}: {e}") from None


def _specials(hf: dict[str, Any], tokenizer: Any, where: str) -> Specials:
    ids = {"pad": hf.get("pad_token_id"), "bos": hf.get("decoder_start_token_id"),
           "eos": hf.get("eos_token_id"), "unk": tokenizer.unk_token_id}
    for name, value in ids.items():
        if not isinstance(value, int):
            raise UserError(f"{where}: no {name} token id (got {value!r})")
    return Specials(**ids)


def import_pretrained(model_dir: str | os.PathLike, out: str | os.PathLike) -> ImportedModel:
    """Write the Hugging Face model folder ``model_dir`` as the padless run ``out``.

    The run is built in a temporary folder beside ``out`` and put in place whole, so an
    interrupted import leaves nothing. It holds ``best.pt`` (the weights, no training
    state: ``train --init-from`` fine-tunes it), ``text/`` (the model's tokenizer),
    ``config.yaml`` and ``run.json``.

    Raises:
        UserError: one line naming what is wrong: not a model folder, an unsupported
            ``model_type``, no tokenizer, weights that are missing, damaged or do not fit
            the config, or an ``out`` that exists and is not empty.
    """
    model_dir, out = Path(model_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory; padless import writes "
                        "a new run: choose another --out")
    hf = _read_config(model_dir)
    where = str(model_dir / "config.json")
    config = model_config(hf, where)
    vocab_size = hf.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise UserError(f"{where}: vocab_size {vocab_size!r} is not a positive integer")
    hf_tokenizer = load_hf_tokenizer(model_dir)
    tokenizer = PretrainedTokenizer(hf_tokenizer, _specials(hf, hf_tokenizer, where),
                                    vocab_size)
    model = build_model(config, vocab_size, tokenizer.vocab.specials)
    weights = hf_state_dict(model_dir, model, hf["model_type"])
    text = TextProcessor(tokenizer.vocab, normalize="none", tokenizer=tokenizer)
    # the model's config; a training run (train --init-from) adds its own train section
    section = {"model": asdict(config)}
    checkpoint = Checkpoint(config=section, vocab=tokenizer.vocab.to_dict(),
                            text=text_settings(text), weights=weights)
    with atomic_directory(out) as tmp:
        run = RunDirectory(tmp)
        write_run_info(run, RunInfo(marked=True, imported_from=str(model_dir.resolve())))
        checkpoint.save(run.best)
        text.save(run.text_dir)
        write_text_atomic(run.config_file, yaml.safe_dump(section, sort_keys=False))
    return ImportedModel(out, hf["model_type"], config, vocab_size,
                         sum(p.numel() for p in model.parameters()))
