"""Answers as Server-Sent Events (``"stream": true``): :func:`event_stream`.

A streamed request is decoded in the continuous batch like any other greedy or sampling
request; after every decoding step the worker thread hands the request's new tokens to the
event loop (``loop.call_soon_threadsafe``), which sends them as they come::

    event: token
    data: {"index": 0, "token": "fine", "text": "fine"}

    event: done
    data: {... the answer the request would have got without "stream" ...}

``index`` is the input (0 for a chat message, the line for translate), ``token`` the new
token, ``text`` the answer so far, detokenised. The last event is ``done``, with the whole
answer and its scores, or ``error``, with ``{"detail": ...}`` (a timeout, a server
stopping); then the stream ends. A client that goes away gives its request up: its rows
leave the running batch at the next step, as a client that stops waiting does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from fastapi import Request

from padless.data.text import TextProcessor
from padless.serving.batcher import DynamicBatcher, ShuttingDown

__all__ = ["event", "event_stream", "token_sink"]

_POLL_S = 0.1  # how often a stream looks whether its client went away


def event(name: str, data: Any) -> bytes:
    """One Server-Sent Event."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def token_sink(loop: asyncio.AbstractEventLoop,
               queue: asyncio.Queue) -> Callable[[int, list[int]], None]:
    """The callback the worker thread calls after each step: hands ``(index, tokens)`` to
    the event loop's ``queue``."""
    return lambda index, tokens: loop.call_soon_threadsafe(queue.put_nowait, (index, tokens))


async def event_stream(http: Request, batcher: DynamicBatcher, future: Future,
                       queue: asyncio.Queue, text: TextProcessor, timeout_s: float,
                       final: Callable[[Any], dict]) -> AsyncIterator[bytes]:
    """The events of one streamed request: its tokens as ``queue`` receives them, then
    ``final(result)`` as ``done`` (see the module docstring)."""
    answer = asyncio.wrap_future(future)
    deadline = time.monotonic() + timeout_s
    shown: dict[int, int] = {}  # tokens sent, per input
    try:
        while not (answer.done() and queue.empty()):
            left = deadline - time.monotonic()
            if left <= 0:
                yield event("error", {"detail": f"no answer within the server's timeout of "
                                                f"{timeout_s:g} s"})
                return
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, answer}, timeout=min(left, _POLL_S),
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if not answer.done() and await http.is_disconnected():
                    return
                continue
            index, tokens = getter.result()
            for position in range(shown.get(index, 0), len(tokens)):
                yield event("token", {"index": index,
                                      "token": text.vocab.id_to_token(tokens[position]),
                                      "text": text.decode(tokens[: position + 1])})
            shown[index] = len(tokens)
        try:
            yield event("done", final(answer.result()))
        except ShuttingDown as e:
            yield event("error", {"detail": str(e)})
    finally:
        if not answer.done():  # the client went away, or the stream ended early
            batcher.cancel(future)
            answer.cancel()
