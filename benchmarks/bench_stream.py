"""Streaming over HTTP: when an answer's first token arrives, against the whole answer.

One ``padless serve RUN_DIR`` process on 127.0.0.1 (``--min-length 30 --max-length 30``, so
that every answer is 30 tokens long, and the default greedy search) gets ``POST
/v1/translate`` requests with ``"stream": true``, one at a time, each a line of the run's test
split. For each, measured at the client from the moment the request is sent: the arrival of
the first ``token`` event, and of the ``done`` event (the whole answer). Alternating with
them, the same request without ``stream`` is timed too: what streaming costs. Figures are
medians over the requests.

Goal (issue 33): the first token of a 30-token greedy answer arrives in at most 1/5 of the
whole answer's time.

    python -m benchmarks.bench_stream RUN_DIR                # writes RESULTS.md
    python -m benchmarks.bench_stream RUN_DIR --requests 5 --no-write
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.results import publish
from benchmarks.server import Server, prompts
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory

GOAL = 1 / 5
LENGTH = 30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--requests", type=int, default=50, help="timed requests of each kind")
    parser.add_argument("--warmup", type=int, default=3, help="requests not counted")
    parser.add_argument("--threads", type=int, default=1, help="the server's decoding threads")
    parser.add_argument("--log", type=Path, default=Path("runs/bench_stream/server.log"))
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def streamed(connection: http.client.HTTPConnection, line: str) -> tuple[float, float, int]:
    """Seconds to the first ``token`` event and to ``done``, and the answer's token count."""
    began = time.perf_counter()
    connection.request("POST", "/v1/translate", body=json.dumps(
        {"lines": [line], "stream": True}), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit(f"the server answered {response.status}: {response.read()!r}")
    first, tokens, event = None, 0, ""
    while raw := response.readline():
        text = raw.decode().rstrip("\r\n")
        if text.startswith("event: "):
            event = text.removeprefix("event: ")
            if event == "token":
                first = first or time.perf_counter() - began
                tokens += 1
            elif event == "done":
                done = time.perf_counter() - began
                response.read()  # the done event's data and the stream's end
                return first or done, done, tokens
            elif event == "error":
                raise SystemExit(f"the stream ended with an error: {response.readline()!r}")
    raise SystemExit("the stream ended without a done event")


def whole(connection: http.client.HTTPConnection, line: str) -> float:
    """Seconds to the answer of the same request without ``stream``."""
    began = time.perf_counter()
    connection.request("POST", "/v1/translate", body=json.dumps({"lines": [line]}),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"the server answered {response.status}")
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lines = prompts(args.run_dir)[: args.warmup + args.requests]
    args.log.parent.mkdir(parents=True, exist_ok=True)
    # every test line is sent, however long: the default --max-input-tokens would refuse some
    server = Server(args.run_dir, ["--min-length", str(LENGTH), "--max-length", str(LENGTH),
                                   "--max-input-tokens", "1000"], args.threads, args.log)
    firsts, dones, plains, counts = [], [], [], set()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        for k, line in enumerate(lines):
            first, done, tokens = streamed(connection, line)
            plain = whole(connection, line)
            if k >= args.warmup:
                firsts.append(first)
                dones.append(done)
                plains.append(plain)
                counts.add(tokens)
        connection.close()
    finally:
        code = server.stop()
    first, done, plain = (statistics.median(x) * 1000 for x in (firsts, dones, plains))
    ratio = first / done
    checkpoint = Checkpoint.load(RunDirectory(args.run_dir).best, mmap=True)
    publish("bench_stream", "Streaming over HTTP (`bench_stream.py`)", "bench_stream.py", argv,
            f"; run {args.run_dir.name} ({checkpoint.model_config().arch}, step "
            f"{checkpoint.step}), served with `--threads {args.threads} --min-length {LENGTH} "
            f"--max-length {LENGTH} --max-input-tokens 1000`, precision {server.precision}; "
            f"{len(firsts)} test-split lines one at a time after {args.warmup} not counted, "
            f"each streamed and then asked without `stream`; token events per answer: "
            f"{sorted(counts)}; medians, measured at the client. The server exited with {code} "
            "after SIGTERM.",
            ["| | ms |", "|---|---:|",
             f"| first `token` event | {first:.1f} |",
             f"| `done` event (the whole answer) | {done:.1f} |",
             f"| the same request without `stream` | {plain:.1f} |", "",
             f"The first token came at {ratio:.3f} of the whole answer's time (goal <= "
             f"{GOAL:g}: {'met' if ratio <= GOAL else 'missed'}); streaming took "
             f"{done / plain:.2f}x the time of the plain request."],
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
