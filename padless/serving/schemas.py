"""The JSON bodies of the HTTP API (pydantic models; FastAPI checks requests against them and
documents them at ``/docs``).

Unknown fields, wrong types, and NaN or infinite numbers are rejected (422), so a typo such as
``"temprature"`` is an error rather than silently ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatRequest", "ChatResponse", "DecodingRequest", "TranslateRequest", "TranslateResponse",
]

SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "seed")


class DecodingRequest(BaseModel):
    """How to decode; every field is optional (the server's defaults apply)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    beam: int | None = Field(
        None, ge=1, description="beam search with this many beams (1: greedy search)")
    sample: bool = Field(False, description="sample the answer (with the fields below)")
    temperature: float = Field(1.0, gt=0, le=100, description="sampling temperature")
    top_k: int = Field(0, ge=0, description="sample among the K likeliest tokens (0: all)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling probability mass")
    seed: int | None = Field(
        None, ge=0, lt=2**63,
        description="seed of this request's sampler: the same seed and request give the "
                    "same answer, whatever else the server is doing")


class ChatRequest(DecodingRequest):
    """``POST /v1/chat``: one message to answer."""

    message: str = Field(description="what to say to the model")


class ChatResponse(BaseModel):
    """The answer to a chat message, with what the web page draws its heatmap from."""

    reply: str = Field(description="the answer, detokenised")
    tokens: list[str] = Field(description="the answer's tokens")
    score: float | None = Field(
        description="greedy and sampling: the answer's log-probability; beam search: that "
                    "divided by the length penalty")
    latency_ms: float = Field(description="time spent on this request in the server")
    source_tokens: list[str] = Field(
        description="the message's tokens as the model saw them (<unk> for unknown words)")
    attention: list[list[float]] = Field(
        description="attention[i][j]: weight of source token j when the model chose answer "
                    "token i; when `finished`, a last row is the end token's")
    finished: bool = Field(description="the model ended the answer (not cut at max length)")
    method: str = Field(description="greedy, beam or sample")


class TranslateRequest(DecodingRequest):
    """``POST /v1/translate``: many lines, each answered independently."""

    lines: list[str] = Field(description="the inputs; an empty line gets an empty output")


class TranslateResponse(BaseModel):
    """One output per input line, in input order."""

    translations: list[str]
    latency_ms: float
