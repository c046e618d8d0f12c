"""Several trained models decoding as one: :class:`Ensemble` (``--ensemble RUN2 ...``).

At every step each member computes its log-probabilities for the rows' next token from its
own decoding state, and the ensemble's are their mean (the log of the members' geometric
mean, as fairseq's and OpenNMT's ensembles decode; the search never needs them to sum to
one). Any mix of architectures works, GRU beside Transformer, as long as the members share
one vocabulary: the search sees one model, its rows, and one state whose ``select`` and
``concat`` act on every member's. The attention shown is the first member's.

An ensemble decodes only: it has no teacher-forced states to train or score with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from padless.models.base import DecoderState, EncoderDecoder

__all__ = ["Ensemble", "EnsembleState"]


@dataclass(frozen=True)
class EnsembleState:
    """Each member's decoding state of the same rows."""

    states: tuple[DecoderState, ...]

    def select(self, rows: Tensor) -> EnsembleState:
        return EnsembleState(tuple(state.select(rows) for state in self.states))

    def concat(self, other: EnsembleState) -> EnsembleState:
        return EnsembleState(tuple(a.concat(b) for a, b in zip(self.states, other.states,
                                                               strict=True)))


class Ensemble(EncoderDecoder):
    """The mean of ``members``' log-probabilities at every decoding step.

    Args:
        members: two or more models in eval mode, on one device, with one vocabulary (the
            same size and special ids).

    Raises:
        ValueError: fewer than two members, or members of different vocabularies or devices.
    """

    def __init__(self, members: Sequence[EncoderDecoder]) -> None:
        first = members[0]
        super().__init__(first.config, first.vocab_size, first.specials)
        if len(members) < 2:
            raise ValueError("Ensemble: at least two members")
        self.quantized = first.quantized
        for member in members[1:]:
            if (member.vocab_size, member.specials) != (first.vocab_size, first.specials):
                raise ValueError("Ensemble: the members' vocabularies differ")
            if member.device != first.device:
                raise ValueError("Ensemble: the members are on different devices")
        self.members = nn.ModuleList(members)
        self.rows_can_join = all(member.rows_can_join for member in members)
        self.teacher_forced = False
        self.output = first.output

    def start_decoding(self, src: Tensor, src_lengths: Tensor) -> EnsembleState:
        """Every member encodes ``src [S, B]``."""
        return EnsembleState(tuple(m.start_decoding(src, src_lengths) for m in self.members))

    def decode_step(self, prev_tokens: Tensor, state: EnsembleState,
                    ) -> tuple[Tensor, EnsembleState, Tensor]:
        """One step of every member: ``(mean log_probs [R, V] float32 at least, state,
        the first member's attention [R, S])``."""
        steps = [member.decode_step(prev_tokens, member_state)
                 for member, member_state in zip(self.members, state.states, strict=True)]
        dtype = torch.promote_types(steps[0][0].dtype, torch.float32)
        log_probs = torch.stack([step[0].to(dtype) for step in steps]).mean(dim=0)
        return log_probs, EnsembleState(tuple(step[1] for step in steps)), steps[0][2]

    def target_states(self, batch, **options: object) -> Tensor:
        raise TypeError("an ensemble decodes only: it has no teacher-forced states")

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        raise TypeError("an ensemble decodes only: it is not trained")
