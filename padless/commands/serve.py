"""``padless serve RUN_DIR``: an HTTP API and a web chat page for a trained model.

    padless serve runs/chat                        # http://127.0.0.1:8000/
    padless serve runs/chat --port 9000 --beam 5   # beam search unless a request says otherwise

The decoding options (``--beam``, ``--max-length``, ...) are the server's defaults; a request
may ask for another search (``beam``, ``sample``, ...). The work is in
:mod:`padless.serving`; FastAPI and uvicorn are imported only when the server starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from padless.commands.inputs import integer, number
from padless.commands.options import add_decoding_arguments, search_options
from padless.serving.settings import ServeSettings, bounds

__all__ = ["add_arguments", "run"]

DEFAULTS = ServeSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless serve``."""
    add_decoding_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    server.add_argument("--port", type=integer(0, 65535), default=8000,
                        help="TCP port (default 8000; 0: any)")
    server.add_argument("--threads", type=integer(*bounds("threads")), metavar="N",
                        help="torch threads for decoding (default: one per free core but one, "
                             "kept for HTTP; see padless/runtime/threads.py)")
    server.add_argument("--access-log", action="store_true", help="log every request")
    batching = parser.add_argument_group("batching")
    batching.add_argument("--max-batch-size", type=integer(*bounds("max_batch_size")),
                          default=DEFAULTS.max_batch_size,
                          metavar="N", help="sentences decoded together (default "
                          f"{DEFAULTS.max_batch_size}; 1: one request at a time)")
    batching.add_argument("--max-wait-ms", type=number(*bounds("max_wait_ms")),
                          default=DEFAULTS.max_wait_ms,
                          metavar="MS", help="how long a request waits for others to join "
                          f"its batch (default {DEFAULTS.max_wait_ms:g})")
    batching.add_argument("--no-continuous-batching", action="store_true",
                          help="greedy batches run to their end before the next starts (by "
                               "default requests join and leave a running batch at each step)")
    limits = parser.add_argument_group("limits")
    for option, metavar, what in (
        ("--max-chars", "N", "characters per message or line"),
        ("--max-input-tokens", "N", "tokens per message or line"),
        ("--max-lines", "N", "lines per translate request"),
        ("--max-beam", "K", "beams a request may ask for"),
        ("--max-queue", "N", "waiting requests before answering 429"),
        ("--max-body-bytes", "N", "bytes per request body"),
    ):
        name = option[2:].replace("-", "_")
        default = getattr(DEFAULTS, name)
        limits.add_argument(option, type=integer(*bounds(name)), default=default, metavar=metavar,
                            help=f"at most this many {what} (default {default})")
    limits.add_argument("--timeout", type=number(*bounds("timeout_s")), default=DEFAULTS.timeout_s,
                        metavar="S",
                        help="answer 504 to a request not done within S seconds "
                             f"(default {DEFAULTS.timeout_s:g})")


def _settings(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        max_chars=args.max_chars, max_input_tokens=args.max_input_tokens,
        max_lines=args.max_lines, max_beam=args.max_beam, max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, timeout_s=args.timeout,
        max_body_bytes=args.max_body_bytes,
        threads=args.threads,
        continuous_batching=not args.no_continuous_batching,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM (exit 0) or Ctrl-C."""
    from padless.serving.server import bind, load_app, run_server

    defaults = search_options(args)
    settings = _settings(args)
    app = load_app(
        args.run_dir,
        which=args.checkpoint,
        device=args.device,
        defaults=defaults,
        settings=settings,
        precision=args.precision,
        quantization=args.quantize,
    )
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    print(
        f"padless serve: {args.run_dir} at {url}/ (chat page), {url}/docs (API); "
        "Ctrl-C or SIGTERM stops it",
        flush=True,
    )
    chosen = app.state.decoding
    print(f"padless serve: {chosen.describe()}", flush=True)
    if chosen.warning is not None:
        print(f"padless serve: warning: {chosen.warning}", file=sys.stderr)
    if not _is_loopback(args.host):
        print(f"padless serve: listening on {args.host}: anyone who can reach this machine "
              "can use the model", file=sys.stderr)
    run_server(app, sock, access_log=args.access_log)
    print("padless serve: stopped", flush=True)
    return 0
