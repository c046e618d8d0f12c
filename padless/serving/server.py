"""Running the application: :func:`load_app`, :func:`bind` and :func:`run_server`, the three
steps of ``padless serve``.

Shutting down: SIGTERM (or the first Ctrl-C) makes the server refuse new requests (503, and
the listening socket closes), answer every request it has already taken, and return; after
SIGTERM the process then exits 0. A second Ctrl-C stops decoding at the next step: the
requests still waiting get a 503 each, and the process exits 130. A third forces the exit.
"""

from __future__ import annotations

import math
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from padless.data.text import TextProcessor
from padless.decoding.options import SearchOptions
from padless.models import EncoderDecoder, ModelConfig
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory
from padless.runs.loading import load_for_decoding
from padless.runtime.devices import resolve_device
from padless.runtime.errors import UserError
from padless.serving.app import create_app
from padless.serving.batcher import DynamicBatcher
from padless.serving.schemas import json_number
from padless.serving.settings import ServeSettings

__all__ = ["bind", "describe_run", "load_app", "run_server"]


def describe_run(run_dir: str | os.PathLike, which: str, model: EncoderDecoder,
                 text: TextProcessor, config: ModelConfig) -> dict[str, Any]:
    """What ``GET /v1/model`` reports: architecture, sizes, vocabulary, training progress.

    ``model``, ``text`` and ``config`` are what :func:`load_model` returned for the run.
    """
    checkpoint = Checkpoint.load(RunDirectory(run_dir).checkpoint(which), mmap=True)
    valid = {name: json_number(value) for name, value in (checkpoint.valid or {}).items()}
    return {
        "run": Path(run_dir).resolve().name,
        "checkpoint": which,
        "arch": config.arch,
        "model": asdict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(text.vocab),
        "tokenizer": text.tokenizer.name,
        "normalize": text.normalize,
        "step": checkpoint.step,
        "valid": valid or None,
        "best_valid_loss": json_number(checkpoint.state.best_loss),
        "train_time_s": checkpoint.state.train_time_s,
        "device": str(model.device),
    }


def load_app(
    run_dir: str | os.PathLike,
    *,
    which: str = "best",
    device: str = "auto",
    defaults: SearchOptions | None = None,
    settings: ServeSettings | None = None,
    precision: str = "auto",
    quantization: str | None = None,
    ensemble: Sequence[str | os.PathLike] = (),
) -> FastAPI:
    """The application serving ``RUN_DIR``'s ``which`` checkpoint (with ``ensemble``: the
    ensemble of it and those runs') on ``device`` in ``precision`` or ``quantization``
    (``app.state.decoding`` says what it became), ``defaults`` and ``settings`` as in
    :func:`padless.serving.app.create_app`.

    Raises:
        ValueError: a bad run directory, checkpoint, device or precision (one line naming it).
    """
    settings = settings or ServeSettings()
    model, text, config, decoding = load_for_decoding(
        run_dir, which, resolve_device(device), precision=precision,
        quantization=quantization, ensemble=ensemble)
    info = {
        **describe_run(run_dir, which, model, text, config),
        "precision": decoding.to_dict(),
        "ensemble": [Path(run).resolve().name for run in ensemble],
    }
    app = create_app(model, text, defaults=defaults, settings=settings, info=info)
    app.state.decoding = decoding
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        UserError: the address cannot be used (in use, not this machine's, bad name).
    """
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is outside 0-65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
        # proto must say TCP: asyncio sets TCP_NODELAY only on such sockets' connections, and
        # without it every response waits ~40 ms for a delayed ACK (Nagle's algorithm)
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        return sock
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another "
                        "--host or --port") from None


class _DrainingServer(uvicorn.Server):
    """uvicorn's server; on SIGTERM or Ctrl-C the batcher refuses new requests at once."""

    def __init__(self, config: uvicorn.Config, batcher: DynamicBatcher) -> None:
        super().__init__(config)
        self.batcher = batcher
        self._abandoned = False
        self.interrupted = False  # a Ctrl-C came: run_server raises KeyboardInterrupt

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # plain assignments only: this runs in a signal handler
        self.interrupted = self.interrupted or sig == signal.SIGINT
        if self.should_exit and sig == signal.SIGINT and not self._abandoned:
            # the second Ctrl-C: every request taken gets its 503 at the next decoding step,
            # and the drain then ends at once (uvicorn's own second Ctrl-C dropped them
            # unanswered and left the decoding thread running into the interpreter's exit)
            self._abandoned = True
            self.batcher.abandon()
            return
        self.batcher.draining = True
        super().handle_exit(sig, frame)


def run_server(app: FastAPI, sock: socket.socket, *, access_log: bool = False,
               log_level: str = "info") -> None:
    """Serve ``app`` on ``sock`` until SIGTERM or Ctrl-C, then drain (see the module doc).

    Returns normally after SIGTERM; raises KeyboardInterrupt after Ctrl-C. The decoding
    thread has stopped either way.
    """
    settings: ServeSettings = app.state.settings
    config = uvicorn.Config(
        app, log_level=log_level, access_log=access_log, lifespan="on",
        timeout_graceful_shutdown=math.ceil(settings.timeout_s) + 5,
    )
    server = _DrainingServer(config, app.state.batcher)
    # uvicorn handles SIGTERM while serving, then raises it again under the handler that was
    # there before: this one, so that a drained server returns and the process exits 0
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        # a forced exit (a third Ctrl-C) skips the application's shutdown: the decoding
        # thread must still stop before the interpreter does
        app.state.batcher.close(timeout=10, abandon=True)
    # uvicorn raises a captured Ctrl-C again under the handler it found, which is "ignore" in a
    # process started in the background by a script: the exit would then be 0
    if server.interrupted:
        raise KeyboardInterrupt
