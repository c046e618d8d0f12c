"""A Hugging Face model's weights in padless's names: :func:`hf_state_dict`.

Reads ``model.safetensors`` (or its shards, through ``model.safetensors.index.json``) with
the ``safetensors`` package, else ``pytorch_model.bin`` with ``torch.load(weights_only=True)``,
and maps the BART-family names (``model.encoder.layers.0.self_attn.q_proj.weight``, ...) to
those of :class:`padless.models.transformer.Transformer`. Every tensor the padless model has
must come from the file with the same shape; a missing, damaged or misshapen one is one
line that names it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from padless.models.transformer import Transformer
from padless.runtime.errors import UserError

__all__ = ["hf_state_dict", "read_hf_weights"]

Tensor = torch.Tensor


def read_hf_weights(model_dir: str | os.PathLike) -> dict[str, Tensor]:
    """Every tensor of the model folder's weights file(s), by its Hugging Face name.

    Raises:
        UserError: no weights file, or one that is truncated or damaged (named).
    """
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    single = model_dir / "model.safetensors"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                                .values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{index}: not a safetensors index (no weight_map)") from None
        weights: dict[str, Tensor] = {}
        for shard in shards:
            weights.update(_read_safetensors(model_dir / shard))
        return weights
    if single.is_file():
        return _read_safetensors(single)
    legacy = model_dir / "pytorch_model.bin"
    if legacy.is_file():
        try:
            data = torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or not a torch file: torch fails in many ways
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"{legacy}: cannot read the weights ({first})") from None
        if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
            raise UserError(f"{legacy}: not a state dict of tensors")
        return data
    raise UserError(f"{model_dir}: no weights (model.safetensors or pytorch_model.bin)")


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise UserError("reading model.safetensors needs the safetensors package: pip install "
                        "'padless[hf]'") from None
    if not path.is_file():
        raise UserError(f"{path}: missing (named by the safetensors index)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: truncated or damaged ({str(e)[:200]})") from None


def _names(prefix: str) -> dict[str, str]:
    """Our name -> theirs, for the one-to-one tensors of a layer."""
    return {"self_attention.out": f"{prefix}.self_attn.out_proj",
            "norm1": f"{prefix}.self_attn_layer_norm",
            "feed_forward.linear1": f"{prefix}.fc1", "feed_forward.linear2": f"{prefix}.fc2"}


def hf_state_dict(model_dir: str | os.PathLike, model: Transformer,
                  model_type: str) -> dict[str, Tensor]:
    """``model``'s state dict filled from the folder's weights (see the module docstring).

    Raises:
        UserError: a tensor the model needs is missing from the file or has another shape.
    """
    theirs = read_hf_weights(model_dir)
    weights_file = str(model_dir)

    def take(*names: str) -> Tensor:
        """The first of ``names`` the file has (with or without the ``model.`` prefix)."""
        for name in names:
            for candidate in (f"model.{name}", name):
                if candidate in theirs:
                    return theirs[candidate]
        raise UserError(f"{weights_file}: no tensor {names[0]} (is this a {model_type} model?)")

    ours: dict[str, Callable[[], Tensor]] = {
        "src_embedding.weight": lambda: take("shared.weight", "encoder.embed_tokens.weight"),
    }
    ours["output.bias"] = lambda: take("final_logits_bias").reshape(-1)
    if not model.config.tie_output:
        ours["output.weight"] = lambda: take("lm_head.weight")
    for side in ("encoder", "decoder"):
        if model.config.embedding_norm != "none":
            _linear_like(ours, f"{side}_embedding_norm", f"{side}.layernorm_embedding", take)
        if model.config.positions == "learned":
            ours[f"{side}_positions.weight"] = (
                lambda side=side: take(f"{side}.embed_positions.weight"))
        if model.config.norm_position == "pre":
            _linear_like(ours, f"{side}_norm", f"{side}.layer_norm", take)
    for i in range(len(model.encoder_layers)):
        prefix = f"encoder.layers.{i}"
        for mine, other in _names(prefix).items():
            _linear_like(ours, f"encoder_layers.{i}.{mine}", other, take)
        _linear_like(ours, f"encoder_layers.{i}.norm2", f"{prefix}.final_layer_norm", take)
        _fused(ours, f"encoder_layers.{i}.self_attention.qkv", f"{prefix}.self_attn",
               ("q", "k", "v"), take)
    for i in range(len(model.decoder_layers)):
        prefix = f"decoder.layers.{i}"
        for mine, other in _names(prefix).items():
            _linear_like(ours, f"decoder_layers.{i}.{mine}", other, take)
        _linear_like(ours, f"decoder_layers.{i}.norm2", f"{prefix}.encoder_attn_layer_norm", take)
        _linear_like(ours, f"decoder_layers.{i}.norm3", f"{prefix}.final_layer_norm", take)
        _fused(ours, f"decoder_layers.{i}.self_attention.qkv", f"{prefix}.self_attn",
               ("q", "k", "v"), take)
        _linear_like(ours, f"decoder_layers.{i}.cross_attention.query",
                     f"{prefix}.encoder_attn.q_proj", take)
        _linear_like(ours, f"decoder_layers.{i}.cross_attention.out",
                     f"{prefix}.encoder_attn.out_proj", take)
        _fused(ours, f"decoder_layers.{i}.cross_attention.key_value", f"{prefix}.encoder_attn",
               ("k", "v"), take)
    expected = model.state_dict()
    state = {}
    for name, like in expected.items():
        if name not in ours:  # a tied copy (tgt_embedding, output.weight)
            continue
        tensor = ours[name]()
        if tensor.shape != like.shape:
            raise UserError(f"{weights_file}: {name} has shape {tuple(tensor.shape)}, the config "
                            f"says {tuple(like.shape)}: the weights do not fit config.json")
        state[name] = tensor.to(like.dtype).clone()
    for name in expected:  # tied names point at the same tensor as their original
        if name not in state:
            state[name] = state["src_embedding.weight"]
    return state


def _linear_like(ours: dict, mine: str, theirs: str, take: Callable[[str], Tensor]) -> None:
    """A weight and bias that map one to one."""
    ours[f"{mine}.weight"] = lambda: take(f"{theirs}.weight")
    ours[f"{mine}.bias"] = lambda: take(f"{theirs}.bias")


def _fused(ours: dict, mine: str, theirs: str, parts: tuple[str, ...],
           take: Callable[[str], Tensor]) -> None:
    """Projections fused into one (``q, k, v`` or ``k, v``); the keys' bias left out (0)."""
    ours[f"{mine}.weight"] = lambda: torch.cat([take(f"{theirs}.{p}_proj.weight") for p in parts])
    ours[f"{mine}.bias"] = lambda: torch.cat([
        torch.zeros_like(take(f"{theirs}.{p}_proj.bias")) if p == "k"
        else take(f"{theirs}.{p}_proj.bias") for p in parts])
