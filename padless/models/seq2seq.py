"""The tutorial's attention seq2seq model, done right: :class:`Seq2Seq`.

The PyTorch chatbot tutorial's model (bidirectional GRU encoder with summed directions, Luong
attention decoder), with what the tutorial gets wrong fixed:

- attention never looks at source padding (the tutorial's attention is unmasked);
- decoder layer ``l`` starts from encoder layer ``l``'s final states; the tutorial's
  ``encoder_hidden[:decoder.n_layers]`` hands decoder layers 0 and 1 encoder layer 0's
  forward and backward states (see :mod:`padless.models.encoder`);
- the loss is ``log_softmax`` cross-entropy on real tokens only, the true per-token mean (the
  tutorial sums per-step means of ``log(softmax)`` over the whole padded batch);
- under teacher forcing the decoder runs over the whole target at once (see
  :mod:`padless.models.decoder`) instead of one Python-level step per target position.

Layout is time-major: ``[L, B]`` ids, ``[L, B, H]`` states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from padless.data.batch import Batch
from padless.data.vocabulary import Specials
from padless.models.base import EncoderDecoder
from padless.models.config import ModelConfig
from padless.models.decoder import Decoder
from padless.models.encoder import Encoder

__all__ = ["TEACHER_FORCING_MODES", "Encoded", "GRUDecoderState", "Seq2Seq"]

TEACHER_FORCING_MODES = ("batch", "token")


class Encoded(NamedTuple):
    """What :meth:`Seq2Seq.encode` returns.

    Attributes:
        memory: ``[S, B, H]`` encoder outputs, zeros at pads.
        src_mask: ``[S, B]`` bool, True at real source tokens.
        hidden: ``[num_layers, B, H]`` initial decoder state: encoder layer ``l``'s final
            forward and backward states merged, for decoder layer ``l``.
    """

    memory: Tensor
    src_mask: Tensor
    hidden: Tensor


@dataclass(frozen=True)
class GRUDecoderState:
    """The decoding state of ``R`` rows: GRU state plus what attention reads.

    Attributes:
        hidden: ``[num_layers, R, H]`` decoder GRU state.
        memory: ``[S, R, H]`` encoder outputs.
        src_mask: ``[S, R]`` source valid mask.
        sources: ``[R]`` long, the source sentence each row decodes; rows with the same
            source hold the same ``memory``, which lets :meth:`select` skip copying it when
            beam search only reorders the beams of each sentence.
    """

    hidden: Tensor
    memory: Tensor
    src_mask: Tensor
    sources: Tensor

    def select(self, rows: Tensor) -> GRUDecoderState:
        """The state of ``rows`` (see :class:`padless.models.base.DecoderState`)."""
        sources = self.sources.index_select(0, rows)
        memory, src_mask = self.memory, self.src_mask
        if not torch.equal(sources, self.sources):
            memory, src_mask = memory.index_select(1, rows), src_mask.index_select(1, rows)
        return GRUDecoderState(self.hidden.index_select(1, rows), memory, src_mask, sources)

    def concat(self, other: GRUDecoderState) -> GRUDecoderState:
        """The rows of ``self`` followed by the rows of ``other``.

        The encoder outputs are padded to the longer source (zeros, masked out), so every
        row attends exactly as before; ``other``'s source numbers are shifted past
        ``self``'s so they stay distinct.
        """
        steps = max(self.memory.shape[0], other.memory.shape[0])

        def padded(state: GRUDecoderState) -> tuple[Tensor, Tensor]:
            extra = steps - state.memory.shape[0]
            return (nn.functional.pad(state.memory, (0, 0, 0, 0, 0, extra)),
                    nn.functional.pad(state.src_mask, (0, 0, 0, extra), value=False))

        (memory_a, mask_a), (memory_b, mask_b) = padded(self), padded(other)
        shift = int(self.sources.max()) + 1 if self.sources.numel() else 0
        return GRUDecoderState(
            torch.cat([self.hidden, other.hidden], dim=1), torch.cat([memory_a, memory_b], dim=1),
            torch.cat([mask_a, mask_b], dim=1), torch.cat([self.sources, other.sources + shift]),
        )


class Seq2Seq(EncoderDecoder):
    """Bidirectional GRU encoder + Luong attention GRU decoder.

    Args:
        config: the hyper-parameters.
        vocab_size: ``V``, size of the (joint) vocabulary.
        specials: the vocabulary's special ids; PAD's embedding is zero and gets no
            gradient from lookups.

    Attributes:
        encoder: :class:`padless.models.encoder.Encoder`.
        decoder: :class:`padless.models.decoder.Decoder`; ``decoder.out`` is :attr:`output`.
    """

    rows_can_join = True  # Seq2SeqState.concat

    def __init__(self, config: ModelConfig, vocab_size: int,
                 specials: Specials = Specials()) -> None:  # noqa: B008 (frozen)
        super().__init__(config, vocab_size, specials)
        pad_id = self.pad_id
        src_embedding = nn.Embedding(vocab_size, config.embedding_size, padding_idx=pad_id)
        tgt_embedding = (
            src_embedding
            if config.shared_embeddings
            else nn.Embedding(vocab_size, config.embedding_size, padding_idx=pad_id)
        )
        full = config.dropout if config.dropout_scope == "full" else 0.0
        self.encoder = Encoder(
            src_embedding, config.hidden_size, config.num_layers, config.dropout,
            config.merge_directions, embedding_dropout=full,
        )
        self.decoder = Decoder(
            tgt_embedding, config.hidden_size, config.num_layers, config.attention,
            config.dropout, config.tie_output, output_dropout=full,
        )

    @property
    def output(self) -> nn.Linear:
        """The output projection ``H -> V`` (``decoder.out``)."""
        return self.decoder.out

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter exactly once, split ``{"encoder": [...], "decoder": [...]}``.

        For per-part learning rates (the tutorial's decoder lr x5). A shared embedding is in
        the ``"encoder"`` group only; a tied output weight is the decoder embedding's group.
        """
        encoder = list(self.encoder.parameters())
        seen = {id(p) for p in encoder}
        decoder = [p for p in self.decoder.parameters() if id(p) not in seen]
        return {"encoder": encoder, "decoder": decoder}

    def encode(self, src: Tensor, src_lengths: Tensor) -> Encoded:
        """Encode a source batch.

        Args:
            src: ``[S, B]`` source ids.
            src_lengths: ``[B]`` source lengths (CPU preferred; moved there for packing).

        Returns:
            :class:`Encoded` with ``memory [S, B, H]``, ``src_mask [S, B]``,
            ``hidden [num_layers, B, H]``.
        """
        memory, hidden = self.encoder(src, src_lengths)
        steps = torch.arange(src.shape[0], device=src.device)
        src_mask = steps.unsqueeze(1) < src_lengths.to(src.device).unsqueeze(0)
        return Encoded(memory, src_mask, hidden)

    def start_decoding(self, src: Tensor, src_lengths: Tensor) -> GRUDecoderState:
        """Encode ``src [S, B]`` and return the decoding state before the first step."""
        enc = self.encode(src, src_lengths)
        sources = torch.arange(src.shape[1], device=src.device)
        return GRUDecoderState(enc.hidden, enc.memory, enc.src_mask, sources)

    def decode_step(
        self, prev_tokens: Tensor, state: GRUDecoderState
    ) -> tuple[Tensor, GRUDecoderState, Tensor]:
        """One decoding step: ``(log_probs [R, V] float32, next state, attention [R, S])``."""
        states, hidden, weights = self.decoder(
            prev_tokens.unsqueeze(0), state.hidden, state.memory, state.src_mask
        )
        logits = self.output(states[0])
        # float32 at least (bf16/fp16 upcast, float64 kept), as the masked losses do
        dtype = torch.promote_types(logits.dtype, torch.float32)
        log_probs = torch.log_softmax(logits, dim=-1, dtype=dtype)
        return log_probs, replace(state, hidden=hidden), weights[:, 0]

    def target_states(
        self,
        batch: Batch,
        *,
        teacher_forcing_ratio: float = 1.0,
        teacher_forcing: str = "batch",
    ) -> Tensor:
        """``[batch.n_tokens, H]`` attentional states at the real target tokens.

        Args:
            batch: a :class:`padless.data.batch.Batch` (either layout).
            teacher_forcing_ratio: probability of feeding the reference token rather than the
                model's own argmax. ``1.0`` always teacher-forces (the fast path).
            teacher_forcing: ``"batch"``: one coin per batch decides for every step, as in the
                tutorial; ``"token"``: one coin per sequence and step. Coins come from
                ``torch.rand`` on CPU, so ``torch.manual_seed`` and the CPU RNG state make them
                reproducible.
        """
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(
                "Seq2Seq: teacher_forcing_ratio must be in [0, 1], "
                f"got {teacher_forcing_ratio}"
            )
        if teacher_forcing not in TEACHER_FORCING_MODES:
            raise ValueError(
                f"Seq2Seq: unknown teacher_forcing {teacher_forcing!r}; valid ones are "
                f"{', '.join(TEACHER_FORCING_MODES)}"
            )
        src, tgt_in = (batch.src.t(), batch.tgt_in.t()) if batch.batch_first else (
            batch.src, batch.tgt_in)
        encoded = self.encode(src, batch.src_lengths)
        if teacher_forcing_ratio == 1.0 or (
            teacher_forcing == "batch" and bool(torch.rand(()) < teacher_forcing_ratio)
        ):
            states = self._teacher_forced_states(tgt_in, encoded)
        elif teacher_forcing == "batch":
            states = self._stepwise_states(tgt_in, encoded, lambda: False)
        else:
            batch_size = tgt_in.shape[1]
            states = self._stepwise_states(
                tgt_in, encoded, lambda: torch.rand(batch_size) < teacher_forcing_ratio
            )
        if batch.batch_first:
            states = states.transpose(0, 1)
        return states[batch.tgt_mask]

    def _teacher_forced_states(self, tgt_in: Tensor, encoded: Encoded) -> Tensor:
        """The fast path: all steps in one decoder call. ``tgt_in [T, B]`` -> ``[T, B, H]``."""
        states, _, _ = self.decoder(tgt_in, encoded.hidden, encoded.memory, encoded.src_mask)
        return states

    def _stepwise_states(
        self, tgt_in: Tensor, encoded: Encoded, coin: Callable[[], bool | Tensor]
    ) -> Tensor:
        """The step path: one decoder step at a time, feeding references or own predictions.

        Args:
            tgt_in: ``[T, B]`` decoder inputs (BOS then the references).
            encoded: the encoder's output.
            coin: called before every step after the first; returns ``True`` (feed the
                references), ``False`` (feed the model's argmax) or a ``[B]`` bool tensor (per
                sequence).

        Returns:
            ``[T, B, H]`` attentional states, as :meth:`_teacher_forced_states`.
        """
        hidden, memory, src_mask = encoded.hidden, encoded.memory, encoded.src_mask
        inputs = tgt_in[0]
        states = []
        for t in range(tgt_in.shape[0]):
            state, hidden, _ = self.decoder(inputs.unsqueeze(0), hidden, memory, src_mask)
            states.append(state)
            if t + 1 == tgt_in.shape[0]:
                break
            use_reference = coin()
            if use_reference is True:
                inputs = tgt_in[t + 1]
                continue
            # The argmax is not differentiable; projecting without a graph saves memory.
            with torch.no_grad():
                predicted = self.output(state[0]).argmax(dim=-1)
            if isinstance(use_reference, Tensor):
                inputs = torch.where(use_reference.to(tgt_in.device), tgt_in[t + 1], predicted)
            else:
                inputs = predicted
        return torch.cat(states, dim=0)
