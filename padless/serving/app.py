"""The FastAPI application behind ``padless serve``: :func:`create_app`.

Routes: ``POST /v1/chat``, ``POST /v1/translate``, ``GET /v1/model``, ``GET /healthz``, the
web chat page at ``GET /`` (static files shipped in the package, nothing loaded from
elsewhere), and FastAPI's OpenAPI docs at ``/docs``.

Every error a client can cause is a 4xx with a JSON body ``{"detail": "what is wrong"}``:
422 for a malformed body or a bad value, 413 for input over a limit, 429 when the queue is
full, 503 while shutting down, 504 past the per-request timeout. No client value is ever
used as a file path: the page's three files are read once, at start-up, by fixed names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse

from padless.data.text import TextProcessor
from padless.decoding.batched import prefix_ids
from padless.decoding.options import SearchOptions
from padless.decoding.search import Hypothesis
from padless.models import EncoderDecoder
from padless.runtime.errors import UserError
from padless.serving.batcher import DynamicBatcher, QueueFull, ShuttingDown
from padless.serving.limits import BodySizeLimit
from padless.serving.schemas import (
    SAMPLING_FIELDS,
    Alternative,
    ChatRequest,
    ChatResponse,
    DecodingRequest,
    ErrorMessage,
    ScoreRequest,
    ScoreResponse,
    TranslateRequest,
    TranslateResponse,
    json_number,
)
from padless.serving.schemas import PairScore as PairScoreModel
from padless.serving.settings import ServeSettings
from padless.serving.streaming import event_stream, token_sink

__all__ = ["create_app"]

log = logging.getLogger(__name__)

# the page: route -> (file in padless/serving/static, media type)
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    "/chat.css": ("chat.css", "text/css; charset=utf-8"),
}
# the browser may load and contact nothing but this server: the page works offline
_POLL_S = 0.1  # how often a waiting request checks that its client is still there
# what the API's errors look like, for the OpenAPI description: one line, never a list
ERRORS = {status: {"model": ErrorMessage, "description": what} for status, what in (
    (400, "a body that cannot be read as text"), (413, "input over a limit"),
    (422, "a malformed body or a bad value"), (429, "the queue is full"),
    (503, "shutting down, or the decoding worker failed"), (504, "no answer within the timeout"),
)}
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'")


class _Service:
    """What the routes share: turning requests into decoding jobs and back."""

    def __init__(self, batcher: DynamicBatcher, text: TextProcessor, defaults: SearchOptions,
                 settings: ServeSettings) -> None:
        self.batcher, self.text, self.defaults, self.settings = batcher, text, defaults, settings

    def options(self, request: DecodingRequest) -> SearchOptions:
        """The search a request asks for, on top of the server's defaults (422 if bad)."""
        sampling = {name: getattr(request, name) for name in SAMPLING_FIELDS}
        try:
            return self.defaults.asked(beam=request.beam, sample=request.sample,
                                       max_beam=self.settings.max_beam,
                                       n_best=request.n_best, **sampling)
        except UserError as e:  # SearchOptions' own check, e.g. a value the server refuses
            raise HTTPException(422, str(e)) from None

    def encode(self, line: str, where: str, *, target: bool = False) -> list[int]:
        """``line``'s token ids (as a source, or as a ``target``); 413 over the character or
        token limit, 422 if not Unicode."""
        limits = self.settings
        if len(line) > limits.max_chars:
            raise HTTPException(413, f"{where}: {len(line)} characters; this server takes at "
                                     f"most {limits.max_chars}")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPException(422, f"{where}: not valid Unicode (a lone surrogate)") from None
        ids = self.text.encode_target(line) if target else self.text.encode(line)
        if len(ids) > limits.max_input_tokens:
            raise HTTPException(413, f"{where}: {len(ids)} tokens; this server takes at most "
                                     f"{limits.max_input_tokens}")
        return ids

    async def decode(self, request: Request, sources: Sequence[list[int]],
                     options: SearchOptions, seed: int | None, attention: bool,
                     prefixes: Sequence[list[int]] | None = None) -> list[list[Hypothesis]]:
        """Each source's hypotheses, best first, through the batcher (429, 503 or 504 if not). A
        request whose client goes away, or that runs out of time, is given up: the batcher
        decodes no more of it."""
        return await self.answer(request, lambda: self.batcher.submit(
            sources, options, seed=seed, attention=attention, prefixes=prefixes))

    def prefixes(self, prefixes: Sequence[str] | None, count: int, options: SearchOptions,
                 where: str) -> list[list[int]] | None:
        """The ids of ``count`` answers' prefixes (422 if one is bad or they do not fit)."""
        if prefixes is None:
            return None
        if len(prefixes) != count:
            raise HTTPException(422, f"{where}: {len(prefixes)} prefixes for {count} inputs")
        try:
            return [prefix_ids(self.text, p, options.max_length, f"{where}[{i}]")
                    for i, p in enumerate(prefixes)]
        except UserError as e:
            raise HTTPException(422, str(e)) from None

    @staticmethod
    def submitted(submit: Callable[[], Future]) -> Future:
        """The future of the batcher's job that ``submit`` queues (429 or 503 if none)."""
        try:
            return submit()
        except QueueFull as e:
            raise HTTPException(429, f"the server is busy ({e}); try again shortly",
                                headers={"Retry-After": "1"}) from None
        except ShuttingDown as e:
            raise HTTPException(503, str(e)) from None

    def stream(self, http: Request, options: SearchOptions,
               submit: Callable[[Callable], Future],
               final: Callable[[Any], dict]) -> StreamingResponse:
        """``submit(sink)``'s job as Server-Sent Events (:mod:`padless.serving.streaming`),
        ending with ``final(result)``; 422 for beam search, whose best answer can change
        until it ends."""
        if options.method == "beam":
            raise HTTPException(422, "stream: beam search cannot stream (its best answer can "
                                     "change until the search ends); ask without stream")
        queue: asyncio.Queue = asyncio.Queue()
        future = self.submitted(lambda: submit(token_sink(asyncio.get_running_loop(), queue)))
        return StreamingResponse(
            event_stream(http, self.batcher, future, queue, self.text,
                         self.settings.timeout_s, final), media_type="text/event-stream")

    async def answer(self, request: Request, submit: Callable[[], Future]) -> Any:
        """The result of the batcher's job that ``submit`` queues (429, 503 or 504 if none);
        the job is given up when the client goes away or the time runs out."""
        future = self.submitted(submit)
        answer = asyncio.wrap_future(future)
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            while not answer.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HTTPException(504, f"no answer within the server's timeout of "
                                             f"{self.settings.timeout_s:g} s")
                await asyncio.wait({answer}, timeout=min(left, _POLL_S))
                if not answer.done() and await request.is_disconnected():
                    raise HTTPException(499, "the client went away")
        except BaseException:  # a timeout, a client gone, a cancelled handler: give it up
            self.batcher.cancel(future)
            answer.cancel()
            raise
        try:
            return answer.result()
        except ShuttingDown as e:
            raise HTTPException(503, str(e)) from None

    def chat_response(self, ids: list[int], hyp: Hypothesis, method: str,
                      started: float) -> ChatResponse:
        """The answer to message ``ids``: text, tokens, score and the heatmap's data."""
        vocab = self.text.vocab
        attention = [] if hyp.attention is None else [
            [round(w, 4) for w in row] for row in hyp.attention.tolist()]
        return ChatResponse(
            reply=self.text.decode(hyp.tokens), tokens=vocab.decode(hyp.tokens),
            score=json_number(hyp.score), latency_ms=(time.perf_counter() - started) * 1000,
            source_tokens=vocab.decode(ids), attention=attention, finished=hyp.finished,
            method=method,
        )


def _add_api_routes(app: FastAPI, service: _Service, info: dict[str, Any]) -> None:
    """``/v1/chat``, ``/v1/translate``, ``/v1/model`` and ``/healthz``."""

    @app.post("/v1/chat", response_model=ChatResponse, summary="Answer one message",
              responses=ERRORS)
    async def chat(request: ChatRequest, http: Request) -> ChatResponse:
        started = time.perf_counter()
        options = service.options(request)
        ids = service.encode(request.message, "message")
        prefixes = service.prefixes(None if request.prefix is None else [request.prefix], 1,
                                    options, "prefix")
        if not ids:  # as translate's empty lines and chat's at the prompt: an empty answer
            return ChatResponse(reply="", tokens=[], score=None, source_tokens=[],
                                attention=[], finished=False, method=options.method,
                                latency_ms=(time.perf_counter() - started) * 1000)
        if request.stream:
            return service.stream(http, options, lambda sink: service.batcher.submit(
                [ids], options, seed=request.seed, attention=True, prefixes=prefixes,
                stream=sink), lambda nbests: service.chat_response(
                    ids, nbests[0][0], options.method, started).model_dump())
        ((hyp, *_),) = await service.decode(http, [ids], options, request.seed,
                                            attention=True, prefixes=prefixes)
        return service.chat_response(ids, hyp, options.method, started)

    @app.post("/v1/translate", response_model=TranslateResponse,
              summary="Answer many lines, in input order", responses=ERRORS)
    async def translate(request: TranslateRequest, http: Request) -> TranslateResponse:
        started = time.perf_counter()
        if len(request.lines) > service.settings.max_lines:
            raise HTTPException(413, f"lines: {len(request.lines)} lines; this server takes at "
                                     f"most {service.settings.max_lines} per request")
        options = service.options(request)
        sources = [service.encode(line, f"lines[{i}]") for i, line in enumerate(request.lines)]
        prefixes = service.prefixes(request.prefixes, len(sources), options, "prefixes")
        decode = service.text.decode

        def response(nbests: list[list[Hypothesis]]) -> TranslateResponse:
            alternatives = None if options.n_best == 1 else [
                [Alternative(text=decode(h.tokens), score=json_number(h.score),
                             log_prob=json_number(h.log_prob)) for h in nbest]
                for nbest in nbests]
            return TranslateResponse(
                translations=[decode(nbest[0].tokens) for nbest in nbests], n_best=alternatives,
                latency_ms=(time.perf_counter() - started) * 1000)

        if not any(sources):  # all lines empty: nothing to decode
            return response([[Hypothesis([], 0.0, 0.0, False)]] * len(sources))
        if request.stream:
            return service.stream(http, options, lambda sink: service.batcher.submit(
                sources, options, seed=request.seed, prefixes=prefixes, stream=sink),
                lambda nbests: response(nbests).model_dump())
        return response(await service.decode(http, sources, options, request.seed,
                                             attention=False, prefixes=prefixes))

    @app.post("/v1/score", response_model=ScoreResponse, responses=ERRORS,
              summary="The model's log-probability of each pair's target")
    async def score(request: ScoreRequest, http: Request) -> ScoreResponse:
        started = time.perf_counter()
        if len(request.pairs) > service.settings.max_lines:
            raise HTTPException(413, f"pairs: {len(request.pairs)} pairs; this server takes at "
                                     f"most {service.settings.max_lines} per request")
        pairs = []
        for i, pair in enumerate(request.pairs):
            source = service.encode(pair.source, f"pairs[{i}].source")
            if not source:
                raise HTTPException(422, f"pairs[{i}].source: no token to score from")
            target = service.encode(pair.target, f"pairs[{i}].target", target=True)
            pairs.append((source, target))
        scores = await service.answer(http, lambda: service.batcher.submit_scores(pairs))
        return ScoreResponse(scores=[
            PairScoreModel(log_prob=s.log_prob, mean=s.mean, tokens=s.tokens) for s in scores],
            latency_ms=(time.perf_counter() - started) * 1000)

    @app.get("/v1/model", summary="The model, its training and this server's limits")
    async def model_info() -> dict[str, Any]:
        return info

    @app.get("/healthz", summary="Liveness, queue length and batching counters")
    async def healthz() -> JSONResponse:
        batcher = service.batcher
        status = ("failed" if batcher.failure is not None or not batcher.alive
                  else "draining" if batcher.draining else "ok")
        body = {"status": status, "queued": batcher.queued, "in_flight": batcher.in_flight,
                **asdict(batcher.stats)}
        if status == "failed":
            body["detail"] = f"the decoding worker is not running ({batcher.failure or 'stopped'})"
        return JSONResponse(body, status_code=200 if status == "ok" else 503)


def _add_page_routes(app: FastAPI) -> None:
    """The web chat page: three files read once from the package, served by fixed routes."""
    static = files("padless.serving") / "static"
    for route, (name, media_type) in PAGE_FILES.items():
        body = (static / name).read_bytes()

        async def page(body: bytes = body, media_type: str = media_type) -> Response:
            return Response(body, media_type=media_type, headers={
                "Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

        app.add_api_route(route, page, methods=["GET"], include_in_schema=False)


def _add_error_handlers(app: FastAPI) -> None:
    """Errors as one-line JSON: ``{"detail": "..."}``."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        messages = []
        for error in exc.errors():
            loc, reason = error.get("loc", ()), (error.get("ctx") or {}).get("error")
            if error.get("type") == "json_invalid":
                messages.append(f"the body is not valid JSON ({reason}, at character "
                                f"{loc[-1]})")
                continue
            where = ".".join(str(part) for part in loc)
            detail = f"{error.get('msg', 'invalid')}" + (f" ({reason})" if reason else "")
            messages.append(f"{where}: {detail}" if where else detail)
        return JSONResponse({"detail": "; ".join(messages)}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error (see the server's log)"},
                            status_code=500)


def create_app(
    model: EncoderDecoder,
    text: TextProcessor,
    *,
    defaults: SearchOptions | None = None,
    settings: ServeSettings | None = None,
    info: dict[str, Any] | None = None,
) -> FastAPI:
    """The application: routes, error handlers and a :class:`DynamicBatcher` for ``model``.

    Args:
        model: in eval mode; decoded on the batcher's worker thread only.
        text: the run's TextProcessor (encodes messages, decodes answers).
        defaults: the search a request gets when it asks for none (and the fields requests
            cannot set, such as ``max_length``); default ``SearchOptions()``.
        settings: limits and batching; default ``ServeSettings()``.
        info: what ``GET /v1/model`` reports (plain JSON values); the limits and defaults
            are added to it.

    The batcher starts with the application (its lifespan) and stops with it, after
    decoding every request it took; ``app.state.batcher`` and ``app.state.settings`` are
    the batcher and ``settings``.
    """
    defaults = defaults or SearchOptions()
    settings = settings or ServeSettings()
    batcher = DynamicBatcher(
        model, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue, threads=settings.threads,
        continuous=settings.continuous_batching,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await asyncio.to_thread(batcher.close)

    app = FastAPI(title="padless", summary="Talk to a padless seq2seq model",
                  lifespan=lifespan)
    app.state.batcher, app.state.settings = batcher, settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    info = {
        **(info or {}),
        "defaults": asdict(defaults),
        "limits": asdict(settings),
        # the searches whose requests join and leave a running batch at every step
        "continuous_batching": sorted(batcher.continuous),
    }
    _add_api_routes(app, _Service(batcher, text, defaults, settings), info)
    _add_page_routes(app)
    app.openapi = lambda: _openapi_with_limits(app, settings)
    return app


def _openapi_with_limits(app: FastAPI, settings: ServeSettings) -> dict[str, Any]:
    """FastAPI's OpenAPI document, with this server's limits on the request fields (the
    characters of a message or line, lines per request, beams), so that a body the schema
    calls valid is one the server takes. The token limit depends on the tokenizer: the one
    413 a schema-valid body can still get."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             routes=app.routes)
        models = schema["components"]["schemas"]
        models["ChatRequest"]["properties"]["message"]["maxLength"] = settings.max_chars
        lines = models["TranslateRequest"]["properties"]["lines"]
        lines["maxItems"] = settings.max_lines
        lines["items"]["maxLength"] = settings.max_chars
        for name in ("ChatRequest", "TranslateRequest"):
            beam = models[name]["properties"]["beam"]["anyOf"][0]  # [integer, null]
            beam["maximum"] = settings.max_beam
        app.openapi_schema = schema
    return app.openapi_schema
