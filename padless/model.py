"""The attention seq2seq model: :class:`ModelConfig`, :class:`Encoded` and :class:`Seq2Seq`.

The PyTorch chatbot tutorial's model (bidirectional GRU encoder with summed directions, Luong
attention decoder), with what the tutorial gets wrong fixed:

- attention never looks at source padding (the tutorial's attention is unmasked);
- decoder layer ``l`` starts from encoder layer ``l``'s final states; the tutorial's
  ``encoder_hidden[:decoder.n_layers]`` hands decoder layers 0 and 1 encoder layer 0's
  forward and backward states (see :mod:`padless.encoder`);
- the loss is ``log_softmax`` cross-entropy on real tokens only, the true per-token mean (the
  tutorial sums per-step means of ``log(softmax)`` over the whole padded batch);
- under teacher forcing the decoder runs over the whole target at once (see
  :mod:`padless.decoder`) instead of one Python-level step per target position.

Layout is time-major: ``[L, B]`` ids, ``[L, B, H]`` states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from padless.attention import ATTENTION_METHODS
from padless.batch import Batch
from padless.decoder import Decoder
from padless.encoder import MERGE_METHODS, Encoder
from padless.losses import LossOutput, masked_linear_cross_entropy

__all__ = ["TEACHER_FORCING_MODES", "Encoded", "ModelConfig", "Seq2Seq"]

TEACHER_FORCING_MODES = ("batch", "token")


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`Seq2Seq`; the defaults are the tutorial's model.

    Attributes:
        embedding_size: ``E``, size of the token embeddings.
        hidden_size: ``H``, GRU size (per direction in the encoder) and attention size.
        num_layers: GRU layers of the encoder and of the decoder.
        attention: Luong score, ``"dot"``, ``"general"`` or ``"concat"``.
        dropout: in ``[0, 1)``; on decoder embeddings and between GRU layers.
        merge_directions: ``"sum"`` (the tutorial) or ``"project"`` (linear ``2H -> H``).
        shared_embeddings: one embedding table for encoder and decoder (one joint vocabulary).
        tie_output: the output projection's weight is the decoder embedding (needs ``E == H``).

    Raises:
        ValueError: on a bad value, naming the field.
    """

    embedding_size: int = 500
    hidden_size: int = 500
    num_layers: int = 2
    attention: str = "dot"
    dropout: float = 0.1
    merge_directions: str = "sum"
    shared_embeddings: bool = True
    tie_output: bool = False

    def __post_init__(self) -> None:
        for name in ("embedding_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        choices = {"attention": ATTENTION_METHODS, "merge_directions": MERGE_METHODS}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"ModelConfig.{name} must be one of {', '.join(valid)}, "
                    f"got {getattr(self, name)!r}"
                )
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ValueError(f"ModelConfig.dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {dropout!r}")
        for name in ("shared_embeddings", "tie_output"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"ModelConfig.{name} must be true or false, got {getattr(self, name)!r}"
                )
        if self.tie_output and self.embedding_size != self.hidden_size:
            raise ValueError(
                f"ModelConfig.tie_output needs embedding_size == hidden_size, got "
                f"{self.embedding_size} and {self.hidden_size}"
            )


class Encoded(NamedTuple):
    """What :meth:`Seq2Seq.encode` returns; everything decoding needs.

    Attributes:
        memory: ``[S, B, H]`` encoder outputs, zeros at pads.
        src_mask: ``[S, B]`` bool, True at real source tokens.
        hidden: ``[num_layers, B, H]`` initial decoder state: encoder layer ``l``'s final
            forward and backward states merged, for decoder layer ``l``.
    """

    memory: Tensor
    src_mask: Tensor
    hidden: Tensor


class Seq2Seq(nn.Module):
    """Bidirectional GRU encoder + Luong attention GRU decoder.

    Args:
        config: the hyper-parameters.
        vocab_size: ``V``, size of the (joint) vocabulary.
        pad_id: the padding id (its embedding is zero and gets no gradient from lookups).

    Attributes:
        encoder: :class:`padless.encoder.Encoder`.
        decoder: :class:`padless.decoder.Decoder`; ``decoder.out`` is the output projection.
    """

    def __init__(self, config: ModelConfig, vocab_size: int, pad_id: int = 0) -> None:
        super().__init__()
        if not 0 <= pad_id < vocab_size:
            raise ValueError(
                f"Seq2Seq: pad_id {pad_id} is outside the vocabulary [0, {vocab_size})"
            )
        self.config = config
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        src_embedding = nn.Embedding(vocab_size, config.embedding_size, padding_idx=pad_id)
        tgt_embedding = (
            src_embedding
            if config.shared_embeddings
            else nn.Embedding(vocab_size, config.embedding_size, padding_idx=pad_id)
        )
        self.encoder = Encoder(
            src_embedding,
            config.hidden_size,
            config.num_layers,
            config.dropout,
            config.merge_directions,
        )
        self.decoder = Decoder(
            tgt_embedding,
            config.hidden_size,
            config.num_layers,
            config.attention,
            config.dropout,
            config.tie_output,
        )

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

    def decode_step(
        self, prev_tokens: Tensor, hidden: Tensor, memory: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One decoding step for search (greedy, beam, sampling).

        Args:
            prev_tokens: ``[B]`` previous output ids (BOS at the first step).
            hidden: ``[num_layers, B, H]`` decoder state (``Encoded.hidden`` at the first step).
            memory: ``[S, B, H]`` encoder outputs.
            src_mask: ``[S, B]`` bool source valid mask.

        Returns:
            ``(log_probs [B, V] float32, hidden [num_layers, B, H], attention [B, S])``.
        """
        states, hidden, weights = self.decoder(prev_tokens.unsqueeze(0), hidden, memory, src_mask)
        logits = self.decoder.out(states[0])
        # float32 at least (bf16/fp16 upcast, float64 kept), as the masked losses do
        dtype = torch.promote_types(logits.dtype, torch.float32)
        log_probs = torch.log_softmax(logits, dim=-1, dtype=dtype)
        return log_probs, hidden, weights[:, 0]

    def loss(
        self,
        batch: Batch,
        *,
        reduction: str = "sum",
        teacher_forcing_ratio: float = 1.0,
        teacher_forcing: str = "batch",
        label_smoothing: float = 0.0,
    ) -> LossOutput:
        """Cross-entropy of ``batch.tgt_out`` given ``batch.src``, over real target tokens only.

        Args:
            batch: a :class:`padless.batch.Batch` (either layout).
            reduction: as in :func:`padless.masked_linear_cross_entropy`; the default ``"sum"``
                lets the trainer divide by the token count of a whole optimiser step.
            teacher_forcing_ratio: probability of feeding the reference token rather than the
                model's own argmax. ``1.0`` always teacher-forces (the fast path).
            teacher_forcing: ``"batch"``: one coin per batch decides for every step, as in the
                tutorial; ``"token"``: one coin per sequence and step. Coins come from
                ``torch.rand`` on CPU, so ``torch.manual_seed`` and the CPU RNG state make them
                reproducible.
            label_smoothing: as in :func:`padless.masked_linear_cross_entropy`.

        Returns:
            ``LossOutput(loss, n_tokens)`` with ``n_tokens == batch.n_tokens``.
        """
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(
                "Seq2Seq.loss: teacher_forcing_ratio must be in [0, 1], "
                f"got {teacher_forcing_ratio}"
            )
        if teacher_forcing not in TEACHER_FORCING_MODES:
            raise ValueError(
                f"Seq2Seq.loss: unknown teacher_forcing {teacher_forcing!r}; valid ones are "
                f"{', '.join(TEACHER_FORCING_MODES)}"
            )
        if batch.batch_first:
            src, tgt_in, tgt_out, tgt_mask = (
                t.t() for t in (batch.src, batch.tgt_in, batch.tgt_out, batch.tgt_mask)
            )
        else:
            src, tgt_in, tgt_out, tgt_mask = batch.src, batch.tgt_in, batch.tgt_out, batch.tgt_mask
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
        out = self.decoder.out
        return masked_linear_cross_entropy(
            states,
            out.weight,
            tgt_out,
            tgt_mask,
            bias=out.bias,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )

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
        out = self.decoder.out
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
                predicted = out(state[0]).argmax(dim=-1)
            if isinstance(use_reference, Tensor):
                inputs = torch.where(use_reference.to(tgt_in.device), tgt_in[t + 1], predicted)
            else:
                inputs = predicted
        return torch.cat(states, dim=0)
