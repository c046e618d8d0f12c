"""A trained model set up to decode fast on its device: cast to its precision, its output
layer laid out for the CPU, or quantized (:func:`for_decoding`).

Everything it chooses is chosen once per model and device, never per batch: the same
sentence gets the same answer whether it is decoded alone, in a batch of 64 or beside other
requests in ``padless serve`` (an answer must not depend on its batch-mates, nor on a flag
people take for a speed knob). The choices are measured at :data:`DECODING_ROWS` rows, the
batch the commands decode by default, whatever batch a command then decodes.

Either in the precision chosen for the device (:func:`padless.runtime.precision
.choose_precision`): the weights are cast (bf16 or fp16 matmuls with no per-call casts, and
half the memory traffic; log-probabilities are still float32, ``decode_step``), whereas
training runs under autocast (:mod:`padless.training.step`); or, with ``quantization``,
int8 linear layers (:mod:`padless.models.quantize`). Not quantized, the output layer's weight
is also stored in the layout this CPU multiplies fastest (:mod:`padless.models.layout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from padless.models.base import EncoderDecoder
from padless.models.layout import OutputLayout, lay_out_output
from padless.models.quantize import quantize
from padless.runtime.errors import UserError
from padless.runtime.precision import Precision, choose_precision, hardware

__all__ = ["DECODING_ROWS", "Decoding", "for_decoding"]

DECODING_ROWS = 64  # the rows the precision and the layout are chosen for
# Why decoding's auto is fp32 everywhere: a bf16 matmul rounds a row differently in a batch
# than alone, and so changes answers with their batch-mates (benchmarks/RESULTS.md,
# bench_bf16_answers: 1-2% of an EN-FR Transformer's answers, greedy and beam; fp32: none).
AUTO_DECODING = ("decoding's auto: the same answer whatever the batch, which bf16 does not "
                 "keep; --precision bf16 (or fp16) asks for speed instead")


@dataclass(frozen=True)
class Decoding:
    """A model ready to decode, and what it runs in.

    Attributes:
        model: the model (the one given, cast; or a quantized copy).
        precision: the precision chosen (None when quantized).
        quantized: ``"int8 (per-row activations; K of N linear layers)"`` when
            quantized, else None.
        layout: the output layer's weight layout (None when it is quantized).
    """

    model: EncoderDecoder
    precision: Precision | None
    quantized: str | None = None
    layout: OutputLayout | None = None

    def describe(self) -> str:
        """The line a command shows: ``precision: NAME (why)``, and the output layer's
        layout when it is not the usual one."""
        layout = "" if self.layout is None else self.layout.describe()
        if self.quantized is not None:
            described = f"precision: {self.quantized}, float32 elsewhere"
        else:
            described = self.precision.describe()
        return described + (f"; {layout}" if layout else "")

    @property
    def warning(self) -> str | None:
        return None if self.precision is None else self.precision.warning

    def to_dict(self) -> dict[str, Any]:
        """What ``/v1/model`` reports of it (plain JSON values)."""
        if self.quantized is not None:
            return {"name": "int8", "quantized": self.quantized}
        return self.precision.to_dict()


def for_decoding(
    model: EncoderDecoder,
    precision: str = "auto",
    quantization: str | None = None,
) -> Decoding:
    """``model`` set up to decode: cast in place to the precision chosen for its device,
    with its output layer's weight in the layout this CPU runs fastest
    (:func:`padless.models.layout.lay_out_output`); or, with ``quantization="int8"``, a
    quantized copy. The same model on the same device is always set up the same way.

    Raises:
        UserError: an unknown precision, fp16 on a CPU, an explicit precision beside a
            quantization (int8 decides it), or what :func:`padless.models.quantize.quantize`
            refuses (another device than the CPU).
    """
    if quantization is not None:
        if precision not in ("auto", "fp32"):
            raise UserError(
                f"--quantize {quantization} and --precision {precision}: int8 "
                "decodes with float32 activations; leave --precision out"
            )
        quantized = quantize(model, quantization, DECODING_ROWS)
        layout = (lay_out_output(quantized, DECODING_ROWS)
                  if type(quantized.output) is nn.Linear else None)  # left in float32
        return Decoding(quantized, None, quantized.quantized, layout)
    if precision == "auto":
        chosen = Precision("fp32", "auto", AUTO_DECODING, hardware(model.device))
    else:
        workload = model.config.workload(DECODING_ROWS, training=False)
        chosen = choose_precision(precision, model.device, workload)
    model.to(chosen.dtype)
    return Decoding(model, chosen, layout=lay_out_output(model, DECODING_ROWS))
