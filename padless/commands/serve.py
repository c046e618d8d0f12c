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

from padless.commands.inputs import integer
from padless.commands.options import (
    add_decoding_arguments,
    add_option_arguments,
    options_from_args,
    search_options,
)
from padless.serving.settings import ServeSettings

__all__ = ["add_arguments", "run"]

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``padless serve``."""
    add_decoding_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    server.add_argument("--port", type=integer(0, 65535), default=8000,
                        help="TCP port (default 8000; 0: any)")
    server.add_argument("--access-log", action="store_true", help="log every request")
    add_option_arguments(parser.add_argument_group("server limits and batching"), ServeSettings)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM (exit 0) or Ctrl-C."""
    from padless.serving.server import bind, load_app, run_server

    defaults = search_options(args)
    settings = options_from_args(ServeSettings, args)
    app = load_app(
        args.run_dir,
        which=args.checkpoint,
        device=args.device,
        defaults=defaults,
        settings=settings,
        precision=args.precision,
        quantization=args.quantize,
        ensemble=args.ensemble,
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
