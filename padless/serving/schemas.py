"""The JSON bodies of the HTTP API (pydantic models; FastAPI checks requests against them and
documents them at ``/docs``).

The search fields of a request are generated from :class:`padless.decoding.options.SearchOptions`
(the settings whose :class:`~padless.decoding.options.Knob` says a request may set them), with
the same bounds and descriptions as the command-line flags. Unknown fields, wrong types, and
NaN or infinite numbers are rejected (422), so a typo such as ``"temprature"`` is an error
rather than silently ignored.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, create_model

from padless.decoding.batched import MAX_SEED
from padless.decoding.options import SearchOptions
from padless.runtime.options import knobs

__all__ = [
    "Alternative", "ChatRequest", "ChatResponse", "DecodingRequest", "ErrorMessage", "Pair",
    "PairScore", "SAMPLING_FIELDS", "ScoreRequest", "ScoreResponse",
    "TranslateRequest", "TranslateResponse", "json_number",
]

# the request fields that apply to sampling only (given without "sample": true, a 422)
SAMPLING_FIELDS = tuple(name for name, knob in knobs(SearchOptions)
                        if knob.request and knob.sampling)


def json_number(value: Any) -> Any:
    """``value``, or None for a float JSON cannot hold (NaN, infinity)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _only_numbers(value: Any) -> Any:
    """JSON's numbers and nothing else: ``7.0`` is an integer (JSON Schema says so), while
    ``true`` and ``"7"``, which pydantic's lax mode would take, are not numbers."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("expected a number")
    return value


def _number(kind: type) -> Any:
    return Annotated[kind | None, BeforeValidator(_only_numbers)]


def _search_fields() -> dict[str, Any]:
    """``beam``, ``sample``, the sampling settings and ``seed``, as pydantic fields."""
    defaults = SearchOptions()
    fields: dict[str, Any] = {
        "beam": (_number(int), Field(None, ge=1, description="beam search with this many beams "
                                                           "(1: greedy search)")),
        "sample": (StrictBool, Field(False, description="sample the answer (with the fields "
                                                  "below)")),
    }
    for name, knob in knobs(SearchOptions):
        if not knob.request:
            continue
        bounds = {}
        if knob.minimum is not None:
            bounds["gt" if knob.open_min else "ge"] = knob.minimum
        if knob.maximum is not None:
            bounds["lt" if knob.open_max else "le"] = knob.maximum
        kind = type(getattr(defaults, name))
        fields[name] = (_number(kind), Field(
            None, description=f"{knob.help} (default {getattr(defaults, name)})", **bounds))
    fields["seed"] = (_number(int), Field(
        None, ge=0, le=MAX_SEED, description="seed of this request's sampler: the same seed and "
        "request give the same answer, whatever else the server is doing"))
    return fields


# The rules between fields (SearchOptions.asked enforces them), in the JSON schema too, so
# that what it calls valid the server accepts: beam or sample, and the sampling settings with
# "sample": true only.
_COMBINATIONS = {
    "allOf": [
        {"if": {"properties": {"sample": {"const": True}}, "required": ["sample"]},
         "then": {"properties": {"beam": {"type": "null"}}},
         "else": {"properties": {name: {"type": "null"} for name in SAMPLING_FIELDS}}},
    ]
}

DecodingRequest = create_model(
    "DecodingRequest",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False,
                          json_schema_extra=_COMBINATIONS),
    __doc__="How to decode; every field is optional (the server's defaults apply).",
    **_search_fields(),
)


_STREAM = ("answer as Server-Sent Events: a `token` event per new token, then `done` with the "
           "whole answer (greedy search and sampling; beam search cannot stream)")


class ChatRequest(DecodingRequest):
    """``POST /v1/chat``: one message to answer."""

    message: str = Field(description="what to say to the model (one with no words gets an "
                                     "empty reply)")
    prefix: str | None = Field(None, description="the answer starts with this text, and the "
                                                 "search goes on from there; its tokens add "
                                                 "nothing to the score")
    stream: StrictBool = Field(False, description=_STREAM)


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
    prefixes: list[str] | None = Field(
        None, description="one per line: each answer starts with its line's prefix (an empty "
                          "one: none), and the search goes on from there")
    stream: StrictBool = Field(False, description=_STREAM)


class Alternative(BaseModel):
    """One of a line's ``n_best`` hypotheses."""

    text: str = Field(description="the hypothesis, detokenised")
    score: float | None = Field(description="what beam search ranks by: the log-probability "
                                            "(with any repetition penalty) over the length "
                                            "penalty")
    log_prob: float | None = Field(description="the model's log-probability of it (and its "
                                               "EOS)")


class TranslateResponse(BaseModel):
    """One output per input line, in input order."""

    translations: list[str] = Field(description="each line's best answer")
    n_best: list[list[Alternative]] | None = Field(
        None, description="with n_best > 1: each line's hypotheses, best first")
    latency_ms: float


class Pair(BaseModel):
    """A source and a target of it."""

    model_config = ConfigDict(extra="forbid")
    source: str
    target: str


class ScoreRequest(BaseModel):
    """``POST /v1/score``: pairs to score, teacher-forced."""

    model_config = ConfigDict(extra="forbid")
    pairs: list[Pair] = Field(description="each source needs a token; a target may be empty")


class PairScore(BaseModel):
    """The model's log-probability of a pair's target given its source."""

    log_prob: float = Field(description="summed over the target's tokens and its EOS (nats)")
    mean: float = Field(description="log_prob per token")
    tokens: int = Field(description="the target's tokens, EOS included")


class ScoreResponse(BaseModel):
    """One score per pair, in input order."""

    scores: list[PairScore]
    latency_ms: float


class ErrorMessage(BaseModel):
    """Every error a client can cause: 4xx (or 503 while stopping) with one line."""

    detail: str = Field(description="what is wrong")
