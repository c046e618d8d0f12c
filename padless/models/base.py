"""What every architecture offers training and decoding: :class:`EncoderDecoder`.

Training and scoring need the decoder's output states at the real target tokens
(:meth:`EncoderDecoder.target_states`) and the output projection (:attr:`output`); the loss
is the same for every architecture and lives here. Decoding needs
:meth:`~EncoderDecoder.start_decoding` and :meth:`~EncoderDecoder.decode_step`, which pass
a model-owned :class:`DecoderState` along (a GRU's hidden state, a Transformer's key/value
cache); search reorders, repeats and drops its rows through :meth:`DecoderState.select`
only, so it works with any architecture.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Protocol

import torch
from torch import Tensor, nn

from padless.data.batch import Batch
from padless.data.vocabulary import Specials
from padless.losses import LossOutput, masked_linear_cross_entropy
from padless.models.config import ModelConfig
from padless.runtime.errors import UserError

__all__ = ["DecoderState", "EncoderDecoder"]


class DecoderState(Protocol):
    """A model's decoding state for ``R`` rows (hypotheses), opaque to search."""

    def select(self, rows: Tensor) -> DecoderState:
        """The state of rows ``rows`` (``[R']`` long, on the state's device), in that order.

        Repeats (``rows = [0, 0, 1, 1]``), reorderings and drops are all a selection.
        """
        ...

    # Optional: ``concat(other) -> DecoderState``, the rows of ``self`` then those of
    # ``other`` (started by another ``start_decoding`` call). A model whose state has it says
    # so (``EncoderDecoder.rows_can_join``), and ``padless serve`` then lets new requests join
    # a running greedy batch at any step (continuous batching); without it a batch runs to
    # its end before the next one starts.


class EncoderDecoder(nn.Module):
    """Base class of the seq2seq architectures.

    Subclasses call ``super().__init__(config, vocab_size, specials)``, set :attr:`output`
    (the ``H -> V`` projection) and implement :meth:`target_states`, :meth:`start_decoding` and
    :meth:`decode_step`.

    Attributes:
        config: the hyper-parameters.
        vocab_size: ``V``.
        specials: the vocabulary's special ids: search starts from ``specials.bos``, stops
            at ``specials.eos`` and never outputs ``specials.never_output()``.
    """

    output: nn.Linear
    # Its DecoderState has ``concat``: rows of another decoding can join a running one
    # (``padless serve``'s continuous batching).
    rows_can_join: bool = False
    # It computes teacher-forced states (target_states): it trains and scores pairs (an
    # ensemble decodes only).
    teacher_forced: bool = True
    quantized: str | None = None  # "int8 (...)" once padless.models.quantize made it so

    def __init__(self, config: ModelConfig, vocab_size: int, specials: Specials) -> None:
        super().__init__()
        for name, index in asdict(specials).items():
            if not 0 <= index < vocab_size:
                raise ValueError(f"{type(self).__name__}: the {name} id {index} is outside the "
                                 f"vocabulary [0, {vocab_size})")
        self.config, self.vocab_size, self.specials = config, vocab_size, specials

    @property
    def pad_id(self) -> int:
        return self.specials.pad

    def train(self, mode: bool = True) -> EncoderDecoder:
        """As ``nn.Module.train``; a quantized model decodes only.

        Raises:
            UserError: training mode for a quantized model.
        """
        if mode and self.quantized is not None:
            raise UserError(
                f"this model is quantized ({self.quantized}) for decoding; "
                "training needs the float model: load the checkpoint without "
                "--quantize"
            )
        return super().train(mode)

    def target_states(self, batch: Batch, **options: object) -> Tensor:
        """``[batch.n_tokens, H]`` decoder output states at the real target tokens.

        Row ``i`` predicts ``batch.real_targets()[i]``; pads are not in it.
        ``options`` are architecture-specific (the GRU's teacher forcing).
        """
        raise NotImplementedError

    def start_decoding(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Encode ``src [S, B]`` (lengths ``[B]``, CPU) and return the state before step 0."""
        raise NotImplementedError

    def decode_step(
        self, prev_tokens: Tensor, state: DecoderState
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoding step for ``R`` rows.

        Args:
            prev_tokens: ``[R]`` previous output ids (BOS at the first step).
            state: the state returned by :meth:`start_decoding` or the previous step.

        Returns:
            ``(log_probs [R, V] (float32 at least), next state, attention [R, S])``.
        """
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter exactly once, by part (``{"encoder": [...], "decoder": [...]}``)."""
        raise NotImplementedError

    def loss(
        self,
        batch: Batch,
        *,
        reduction: str = "sum",
        label_smoothing: float = 0.0,
        **options: object,
    ) -> LossOutput:
        """Cross-entropy of ``batch.tgt_out`` given ``batch.src``, over real target tokens only.

        Only the real tokens' states are projected to the vocabulary, in chunks
        (:func:`padless.masked_linear_cross_entropy`).

        Args:
            batch: a :class:`padless.data.batch.Batch` (either layout).
            reduction: as in :func:`padless.masked_linear_cross_entropy`; the default ``"sum"``
                lets the trainer divide by the token count of a whole optimiser step.
            label_smoothing: as in :func:`padless.masked_linear_cross_entropy`.
            options: passed to :meth:`target_states`.

        Returns:
            ``LossOutput(loss, n_tokens)`` with ``n_tokens == batch.n_tokens``.
        """
        states = self.target_states(batch, **options)
        weight, bias = self.output.weight, self.output.bias
        if reduction in ("sum", "mean"):  # no layout needed: the flat real tokens
            every_row = torch.ones(states.shape[0], dtype=torch.bool, device=states.device)
            return masked_linear_cross_entropy(
                states, weight, batch.real_targets(), every_row, bias=bias, reduction=reduction,
                label_smoothing=label_smoothing,
            )
        # per-sequence or per-step reductions need the layout back (pads stay unread)
        padded = states.new_zeros(*batch.tgt_mask.shape, states.shape[-1])
        padded[batch.tgt_mask] = states
        return masked_linear_cross_entropy(
            padded, weight, batch.tgt_out, batch.tgt_mask, bias=bias, reduction=reduction,
            label_smoothing=label_smoothing, batch_first=batch.batch_first,
        )

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return next(self.parameters()).device
