"""A cap on request bodies, checked before the body is read: :class:`BodySizeLimit`."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit"]


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 with a JSON message.

    A declared ``Content-Length`` over the limit is refused before anything is read. A body
    without one (chunked) is counted as it arrives; the read that passes the limit raises an
    ``HTTPException(413)``, which the application's handler answers.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _answer(send, 400, "the Content-Length header is not a number")
            return
        if declared is not None and int(declared) > self.max_bytes:
            await _answer(send, 413, self._too_large(f"{int(declared)} bytes"))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large(f"more than {self.max_bytes} bytes"))
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self, size: str) -> str:
        return f"the request body has {size}; this server takes at most {self.max_bytes}"


async def _answer(send: Send, status: int, detail: str) -> None:
    """Send a whole JSON response ``{"detail": detail}``."""
    body = json.dumps({"detail": detail}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"),
                          (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
