"""A trained Transformer run as a CTranslate2 model: :func:`export_ctranslate2`.

CTranslate2 (the engine OpenNMT-py deploys through) runs the same Transformer as
:class:`padless.models.transformer.Transformer`, so the weights map one to one through its
own spec API (``ctranslate2.specs.TransformerSpec``): fused query/key/value projections, the
cross-attention's fused key/value projection, layer norms before each sub-layer and at the
end of both stacks (or after each sub-layer: an imported Marian or BART model), the
embeddings' scale, norm and activation as the model's config says. Two things are set
explicitly because CTranslate2's defaults differ: the position table (CTranslate2's built-in
sinusoids put all sines before all cosines; padless interleaves them; a learned table is
the model's) and the layer norms' epsilon (torch's 1e-5). The special tokens are the
vocabulary's: a source is fed as padless encodes it, and the decoder starts from the
vocabulary's BOS (an imported model's decoder start). BlenderbotSmall's embedding norm
(``model.embedding_norm: split``) has no CTranslate2 counterpart and is refused.

The directory holds CTranslate2's files (``model.bin``, ``config.json``, the vocabulary) and
the run's text processor (:meth:`padless.data.text.TextProcessor.save`), so the model's own
tokenizer travels with it. The GRU has no CTranslate2 counterpart and is refused.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from padless.models.transformer import Transformer
from padless.runs.loading import load_model
from padless.runs.outputs import check_export_directory
from padless.runtime.errors import UserError
from padless.runtime.files import atomic_directory

__all__ = ["FORMATS", "POSITIONS", "QUANTIZATIONS", "ctranslate2_spec", "export_ctranslate2"]

FORMATS = ("ctranslate2",)
# CTranslate2's weight types (its converters' --quantization); None keeps float32. A model
# saved in float32 can still run in int8: ctranslate2.Translator(path, compute_type="int8").
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")
POSITIONS = 1024  # rows of the exported position table: the longest source or answer


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


def _linear(spec, linear: torch.nn.Linear) -> None:
    spec.weight = _array(linear.weight)
    if linear.bias is not None:
        spec.bias = _array(linear.bias)


def _norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def ctranslate2_spec(model: Transformer, tokens: list[str], positions: int = POSITIONS):
    """The ``ctranslate2.specs.TransformerSpec`` of ``model`` (weights copied as float32).

    Args:
        model: a padless Transformer (any device; its decoding weights as loaded).
        tokens: the joint vocabulary in id order (``Vocabulary.tokens``), ``V`` of them.
        positions: rows of the sinusoidal position table (the longest sequence it can run).

    Raises:
        ModuleNotFoundError: without the ``ctranslate2`` package (the ``export`` extra).
    """
    from ctranslate2.specs import TransformerSpec, common_spec

    config, layers = model.config, len(model.encoder_layers)
    if config.embedding_norm == "split":
        raise UserError("CTranslate2 has no counterpart for BlenderbotSmall's embedding norm "
                        "(model.embedding_norm: split): this model does not export")
    pre = config.norm_position == "pre"
    activations = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU,
                   "silu": common_spec.Activation.SWISH}
    spec = TransformerSpec.from_config(
        (layers, len(model.decoder_layers)), model.heads, pre_norm=pre, no_final_norm=not pre,
        activation=activations[config.activation],
        layernorm_embedding=config.embedding_norm == "after_positions")
    spec.config.layer_norm_epsilon = model.encoder_layers[0].norm1.eps
    names = {name: tokens[index] for name, index in asdict(model.specials).items()}
    spec.config.bos_token, spec.config.eos_token = names["bos"], names["eos"]
    spec.config.unk_token, spec.config.decoder_start_token = names["unk"], names["bos"]
    encoder, decoder = spec.encoder, spec.decoder
    encoder.scale_embeddings = decoder.scale_embeddings = model.scale
    encoder.embeddings[0].weight = _array(model.src_embedding.weight)
    decoder.embeddings.weight = _array(model.tgt_embedding.weight)
    rows = positions if config.positions != "learned" else None
    encoder.position_encodings.encodings = _array(
        model.position_table(rows or 1, decoder=False)[:rows])
    decoder.position_encodings.encodings = _array(model.position_table(rows or 1)[:rows])
    if pre:
        _norm(encoder.layer_norm, model.encoder_norm)
        _norm(decoder.layer_norm, model.decoder_norm)
    if config.embedding_norm == "after_positions":
        _norm(encoder.layernorm_embedding, model.encoder_embedding_norm)
        _norm(decoder.layernorm_embedding, model.decoder_embedding_norm)
    _linear(decoder.projection, model.output)
    for ours, theirs in zip(model.encoder_layers, encoder.layer, strict=True):
        _norm(theirs.self_attention.layer_norm, ours.norm1)
        _linear(theirs.self_attention.linear[0], ours.self_attention.qkv)
        _linear(theirs.self_attention.linear[1], ours.self_attention.out)
        _feed_forward(theirs.ffn, ours.norm2, ours.feed_forward)
    for ours, theirs in zip(model.decoder_layers, decoder.layer, strict=True):
        _norm(theirs.self_attention.layer_norm, ours.norm1)
        _linear(theirs.self_attention.linear[0], ours.self_attention.qkv)
        _linear(theirs.self_attention.linear[1], ours.self_attention.out)
        _norm(theirs.attention.layer_norm, ours.norm2)
        _linear(theirs.attention.linear[0], ours.cross_attention.query)
        _linear(theirs.attention.linear[1], ours.cross_attention.key_value)
        _linear(theirs.attention.linear[2], ours.cross_attention.out)
        _feed_forward(theirs.ffn, ours.norm3, ours.feed_forward)
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    return spec


def _feed_forward(spec, norm: torch.nn.LayerNorm, feed_forward) -> None:
    _norm(spec.layer_norm, norm)
    _linear(spec.linear_0, feed_forward.linear1)
    _linear(spec.linear_1, feed_forward.linear2)


def export_ctranslate2(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    which: str = "best",
    quantization: str | None = None,
    force: bool = False,
) -> Path:
    """Write the run's ``which`` checkpoint as a CTranslate2 model directory ``out``.

    The directory is built beside ``out`` and put in place whole
    (:func:`padless.runtime.files.atomic_directory`): a failure or a kill leaves no half
    model, and with ``force`` an existing ``out`` stays as it was until the new one is done.

    Args:
        run_dir: the ``--out`` directory of ``padless train`` (a Transformer run).
        out: the directory to write.
        which: ``"best"``, ``"latest"`` or ``"averaged"``.
        quantization: one of :data:`QUANTIZATIONS`, or None for float32 weights.
        force: replace ``out`` if it exists.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        UserError: a GRU run, an existing ``out`` without ``force``, an ``out`` that is a
            file or holds the run itself, a bad quantization, or no ``ctranslate2`` package.
    """
    out = Path(out)
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise UserError(f"unknown quantization {quantization!r}; choose from "
                        f"{', '.join(QUANTIZATIONS)}")
    if out.resolve() in (Path(run_dir).resolve(), *Path(run_dir).resolve().parents):
        # --force replaces the whole folder: here it would delete the run's checkpoints
        raise UserError(f"{out}: is or holds the run being exported, which --force would "
                        "delete; choose another --out")
    check_export_directory(out, force)
    if importlib.util.find_spec("ctranslate2") is None:
        raise UserError("export --format ctranslate2 needs the ctranslate2 package: "
                        "pip install 'padless[export]'")
    model, text, config = load_model(run_dir, which, device="cpu")
    if not isinstance(model, Transformer):
        raise UserError(
            f"{run_dir}: a {config.arch} model; CTranslate2 has no counterpart for padless's "
            "GRU, so only transformer runs (model.arch: transformer) export")
    spec = ctranslate2_spec(model, text.vocab.tokens)
    spec.validate()
    spec.optimize(quantization=quantization)
    with atomic_directory(out) as tmp:
        try:
            spec.save(str(tmp))
        except RuntimeError as e:  # CTranslate2's own writer: a full disk, a read-only folder
            raise UserError(f"{out}: CTranslate2 could not write the model ({e})") from None
        except OSError as e:
            if e.filename is not None or e.errno is None:
                raise
            raise OSError(e.errno, e.strerror, str(out)) from None
        text.save(tmp)
    return out
