"""A pad-free encoder-decoder Transformer: :class:`Transformer` (``model.arch: transformer``).

Pre-norm layers (:mod:`padless.models.transformer_layers`), sinusoidal positions, shared
and/or tied embeddings, dropout; and, for pretrained models (``padless import``), the
variants their architectures need (``ModelConfig.norm_position``, ``activation``,
``positions``, ``embedding_scale``, ``embedding_norm``).

Pads cost nothing: the real tokens of a batch are packed to ``[N, H]`` rows
(:class:`padless.models.packing.Packing`) before the embedding, and every position-wise
computation (embedding, query/key/value and output projections, feed-forward layers, layer
norms, and the output projection + loss of :meth:`EncoderDecoder.loss`) runs on those rows
only. Attention alone looks at padded per-sequence blocks, with masks that keep
every token away from pads, from future target tokens and from other sequences.

Positions are sinusoidal rather than learned: no parameters, any length works (answers
longer than every training target included), and the length-bucketed batches that leave the
long positions of a learned table rarely trained do not matter.

Decoding is incremental: :class:`padless.models.kv_cache.TransformerDecoderState` keeps every
decoder layer's self-attention keys and values in a preallocated cache (a step costs
``O(t)``, not a re-run of the prefix; rows may be at different steps, so requests join a
running batch) and the cross-attention keys and values of the encoder memory, computed once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from padless.data.batch import Batch
from padless.data.vocabulary import Specials
from padless.masking import lengths_to_mask
from padless.models.base import EncoderDecoder
from padless.models.config import ModelConfig
from padless.models.kv_cache import TransformerDecoderState
from padless.models.packing import Packing
from padless.models.transformer_layers import DecoderLayer, EncoderLayer, sinusoids

__all__ = ["Transformer", "TransformerDecoderState"]  # the state: from padless.models.kv_cache


class Transformer(EncoderDecoder):
    """Encoder-decoder Transformer over packed real tokens.

    Args:
        config: ``hidden_size`` (the model size, also ``embedding_size``), ``num_layers``
            (of the encoder and of the decoder), ``num_heads``, ``ffn_size``, ``dropout``
            (embeddings, attention weights, residual branches, feed-forward activations),
            ``shared_embeddings``, ``tie_output``.
        vocab_size: ``V``, size of the (joint) vocabulary.
        specials: the vocabulary's special ids (PAD is never embedded: pads are not packed).

    Attributes:
        src_embedding, tgt_embedding: ``nn.Embedding(V, H)`` (one module when shared),
            scaled by ``sqrt(H)`` before the positions are added.
        encoder_layers, decoder_layers: the pre-norm layers.
        encoder_norm, decoder_norm: the final layer norms of the two stacks.
        output: ``nn.Linear(H, V)``; its weight is ``tgt_embedding.weight`` when tied.
    """

    rows_can_join = True  # TransformerDecoderState.concat

    def __init__(self, config: ModelConfig, vocab_size: int,
                 specials: Specials = Specials()) -> None:  # noqa: B008 (frozen)
        super().__init__(config, vocab_size, specials)
        size, heads, ffn = config.hidden_size, config.num_heads, config.transformer_ffn_size
        pad_id = self.pad_id
        self.heads = heads
        self.src_embedding = nn.Embedding(vocab_size, size, padding_idx=pad_id)
        self.tgt_embedding = (
            self.src_embedding if config.shared_embeddings
            else nn.Embedding(vocab_size, size, padding_idx=pad_id))
        layers, pre = config.num_layers, config.norm_position == "pre"
        kinds = {"pre_norm": pre, "activation": config.activation,
                 "attention_dropout": config.attention_dropout,
                 "activation_dropout": config.activation_dropout}
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(size, heads, ffn, config.dropout, **kinds) for _ in range(layers))
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(size, heads, ffn, config.dropout, **kinds) for _ in range(layers))
        # pre-norm stacks end with a norm; a post-norm layer's output is normed already
        self.encoder_norm = nn.LayerNorm(size) if pre else nn.Identity()
        self.decoder_norm = nn.LayerNorm(size) if pre else nn.Identity()
        if config.embedding_norm != "none":
            self.encoder_embedding_norm = nn.LayerNorm(size)
            self.decoder_embedding_norm = nn.LayerNorm(size)
        if config.positions == "learned":
            self.encoder_positions = nn.Embedding(config.max_positions, size)
            self.decoder_positions = nn.Embedding(config.max_positions, size)
        self.output = nn.Linear(size, vocab_size)
        self.dropout = nn.Dropout(config.dropout)
        self.scale = math.sqrt(size) if config.embedding_scale else 1.0
        self._positions: Tensor | None = None  # a cache, not a buffer: see position_table
        self._reset_parameters()
        if config.tie_output:
            self.output.weight = self.tgt_embedding.weight

    def _reset_parameters(self) -> None:
        """Xavier-uniform projections with zero biases (as ``nn.Transformer``), embeddings
        ``N(0, 1/H)`` (their ``sqrt(H)`` scale brings them to unit size), pad rows 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=module.embedding_dim ** -0.5)
                with torch.no_grad():
                    module.weight[self.pad_id].zero_()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"encoder": [...], "decoder": [...]}``, every parameter once; a shared embedding
        (and so a tied output weight) is in the encoder's group."""
        encoder = [*self.src_embedding.parameters(), *self.encoder_layers.parameters(),
                   *self.encoder_norm.parameters()]
        seen = {id(p) for p in encoder}
        decoder = [p for p in self.parameters() if id(p) not in seen]
        return {"encoder": encoder, "decoder": decoder}

    # -- the packed forward pass ---------------------------------------------------------

    def position_table(self, length: int, *, decoder: bool = True) -> Tensor:
        """``[L, H]`` with ``L >= length``: the position encodings added to the scaled
        embeddings, in the embeddings' dtype and device (sinusoids: grown and kept as
        needed; learned: the decoder's or the encoder's table, past its offset).

        Raises:
            ValueError: ``length`` positions past a learned table's rows.
        """
        weight = self.tgt_embedding.weight
        if self.config.positions == "learned":
            table = (self.decoder_positions if decoder else self.encoder_positions).weight
            table = table[self.config.position_offset:]
            if length > table.shape[0]:
                raise ValueError(f"Transformer: {length} positions; this model has learned "
                                 f"{table.shape[0]} (model.max_positions)")
            return table
        table = self._positions
        if (table is None or table.shape[0] < length or table.device != weight.device
                or table.dtype != weight.dtype):
            # A plain attribute, not a buffer: DDP broadcasts buffers and would stall on
            # processes whose tables grew to different lengths.
            rows = max(length, 256, 0 if table is None else table.shape[0])
            table = sinusoids(rows, weight.shape[1], self.config.positions == "sinusoidal")
            self._positions = table = table.to(weight.device, weight.dtype)
        return table

    def _embed(self, ids: Tensor, positions: Tensor, length: int, *, decoder: bool) -> Tensor:
        """``[N, H]``: packed ``ids [N]`` embedded, scaled, plus the encoding of
        ``positions`` (all below ``length``), normed where the config says, then dropout."""
        embedding = self.tgt_embedding if decoder else self.src_embedding
        where = self.position_table(length, decoder=decoder)[positions]
        norm = self.config.embedding_norm
        if norm == "none":
            return self.dropout(embedding(ids) * self.scale + where)
        layer_norm = self.decoder_embedding_norm if decoder else self.encoder_embedding_norm
        if norm == "split" and decoder:  # BlenderbotSmall: the tokens' own, unscaled
            return self.dropout(layer_norm(embedding(ids)) + where)
        return self.dropout(layer_norm(embedding(ids) * self.scale + where))

    def _encode(self, ids: Tensor, packing: Packing) -> Tensor:
        """Packed source ids ``[N_src]`` -> the memory ``[N_src, H]``."""
        x = self._embed(ids, packing.position, packing.length, decoder=False)
        for layer in self.encoder_layers:
            x = layer(x, packing)
        return self.encoder_norm(x)

    def _decode(self, ids: Tensor, packing: Packing, memory: Tensor,
                src_packing: Packing) -> Tensor:
        """Packed decoder inputs ``[N_tgt]`` -> the final states ``[N_tgt, H]``."""
        x = self._embed(ids, packing.position, packing.length, decoder=True)
        for layer in self.decoder_layers:
            blocks = layer.cross_attention.memory_blocks(memory, src_packing)
            x = layer(x, packing, blocks, src_packing.key_mask)
        return self.decoder_norm(x)

    def target_states(
        self,
        batch: Batch,
        *,
        teacher_forcing_ratio: float = 1.0,
        teacher_forcing: str = "batch",
    ) -> Tensor:
        """``[batch.n_tokens, H]`` final decoder states at the real target tokens, in
        ``batch.real_targets()`` order; computed on the real tokens only.

        Args:
            batch: a :class:`padless.data.batch.Batch` (either layout).
            teacher_forcing_ratio: must be 1.0: the Transformer trains with teacher forcing
                only (all target positions in one pass).
            teacher_forcing: accepted for the trainer's sake; unused.
        """
        if teacher_forcing_ratio != 1.0:
            raise ValueError(
                "Transformer: teacher_forcing_ratio must be 1.0 (it trains with teacher "
                f"forcing only), got {teacher_forcing_ratio}")
        first = batch.batch_first
        src_packing = Packing.from_mask(batch.src_mask, batch_first=first)
        tgt_packing = Packing.from_mask(batch.tgt_mask, batch_first=first)
        memory = self._encode(batch.src[batch.src_mask], src_packing)
        return self._decode(batch.tgt_in[batch.tgt_mask], tgt_packing, memory, src_packing)

    # -- incremental decoding ------------------------------------------------------------

    def start_decoding(self, src: Tensor, src_lengths: Tensor) -> TransformerDecoderState:
        """Encode ``src [S, B]`` (lengths ``[B]``, any device) and compute every decoder
        layer's cross-attention keys and values once. A length of 0 is allowed: that row's
        cross-attention gives a zero context."""
        if src.dim() != 2 or src_lengths.shape != src.shape[1:]:
            raise ValueError(
                f"Transformer: src of shape {tuple(src.shape)} and src_lengths of shape "
                f"{tuple(src_lengths.shape)} do not fit; they must be [S, B] and [B]")
        mask = lengths_to_mask(src_lengths, src.shape[0]).to(src.device)  # [S, B]
        packing = Packing.from_mask(mask)
        memory = self._encode(src[mask], packing)
        blocks = tuple(
            layer.cross_attention.memory_blocks(memory, packing).contiguous()
            for layer in self.decoder_layers
        )
        return TransformerDecoderState.start(blocks, packing.key_mask, self.heads, memory.shape[-1])

    def decode_step(
        self, prev_tokens: Tensor, state: TransformerDecoderState
    ) -> tuple[Tensor, TransformerDecoderState, Tensor]:
        """One step for ``R`` rows, each at its own position: ``(log_probs [R, V] float32 at
        least, next state, attention [R, S])``; the attention is the last layer's
        cross-attention averaged over heads, exactly 0 at source pads. ``state`` is used up:
        go on from the one returned."""
        caches = state.caches()
        x = self._embed(prev_tokens, state.lengths, state.steps + 1, decoder=True)
        weights = None
        last = len(self.decoder_layers) - 1
        for i, (layer, cache) in enumerate(zip(self.decoder_layers, caches, strict=True)):
            x, layer_weights = layer.step(
                x, cache, state.memory[i], state.key_mask, need_weights=i == last
            )
            weights = layer_weights if i == last else weights
        logits = self.output(self.decoder_norm(x))
        # float32 at least (bf16/fp16 upcast, float64 kept), as the masked losses do
        dtype = torch.promote_types(logits.dtype, torch.float32)
        log_probs = torch.log_softmax(logits, dim=-1, dtype=dtype)
        return log_probs, state.advanced(caches), weights.mean(dim=1)
