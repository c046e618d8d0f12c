"""Serving: requests/s and latency of ``padless serve`` with dynamic batching on and off.

Three ``padless serve`` processes run on 127.0.0.1, on the same run with one decoding thread
each: ``continuous`` (the defaults: greedy requests join and leave the running batch at every
decoding step, up to 32 sentences), ``static batches`` (``--no-continuous-batching``: requests
that arrive together are decoded together, and a batch runs until its longest answer ends)
and ``one at a time`` (``--max-batch-size 1``). For N = 1, 8, 32 and 128 closed-loop clients
(each sends ``POST /v1/chat`` with a message from the run's test split, waits for the answer,
sends the next) the servers take turns, round after round. A turn lasts ``--warmup`` seconds
(not counted) plus ``--seconds`` measured; it is bounded by ``--max-requests`` too, and then
waits for the requests still out (none is left unanswered). Counted: the requests that finish
inside the measured window; requests/s is their number over the window (the median over
rounds), the latency percentiles are over them (pooled over rounds).

Before timing, the same messages go to every server (all at once to the batching ones, one by
one to the other) and the answers are compared: they must be the same.

Goals (issue 12, and issue 21 for a Transformer run): at 32 clients, batching (the default
server) >= 5x the requests/s of one at a time, with a p50 latency no worse than 2x (a
Transformer's: 3x) a lone request's (1 client, one at a time).

The model: ``--run RUN_DIR``, or by default the ``chatbot`` config trained for
``--train-minutes`` on chitchat (prepared as quickstart does), kept in ``--work`` and reused.

    python -m benchmarks.bench_serve                  # about 12 minutes; writes RESULTS.md
    python -m benchmarks.bench_serve --quick          # smoke run (tiny model), no file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.results import publish
from benchmarks.server import Server, prompts
from padless.cli import main as padless
from padless.runs.checkpoint import Checkpoint
from padless.runs.directory import RunDirectory

MODES = {"continuous": [], "static batches": ["--no-continuous-batching"],
         "one at a time": ["--max-batch-size", "1"]}
DEFAULT, ALONE = "continuous", "one at a time"


@dataclass
class Turn:
    """One measured turn: latencies (s) of the requests finished in the window."""

    latencies: list[float] = field(default_factory=list)
    requests_per_s: float = 0.0
    errors: int = 0


async def post_chat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    body: bytes) -> tuple[int, bytes]:
    """One request on a keep-alive connection (HTTP/1.1, Content-Length framing)."""
    writer.write(b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def run_turn(port: int, clients: int, bodies: list[bytes], warmup: float,
                   seconds: float, max_requests: int) -> Turn:
    """``clients`` closed-loop clients for ``warmup + seconds`` (or ``max_requests``)."""
    loop = asyncio.get_running_loop()
    turn, sent = Turn(), 0
    window_start = loop.time() + warmup
    window_end = window_start + seconds

    async def client(index: int) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        k = index
        while loop.time() < window_end and sent < max_requests:
            sent += 1
            began = loop.time()
            status, _ = await post_chat(reader, writer, bodies[k % len(bodies)])
            ended = loop.time()
            k += clients
            turn.errors += status != 200
            if window_start <= ended <= window_end:
                turn.latencies.append(ended - began)
        writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    turn.requests_per_s = len(turn.latencies) / seconds
    return turn


async def answers(port: int, bodies: list[bytes], together: bool) -> list[list[str]]:
    """The answers' tokens, all requests at once or one after another."""
    async def one(body: bytes) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, payload = await post_chat(reader, writer, body)
        writer.close()
        return json.loads(payload)["tokens"] if status == 200 else [f"HTTP {status}"]

    if together:
        return list(await asyncio.gather(*(one(b) for b in bodies)))
    return [await one(b) for b in bodies]


def prepare_run(work: Path, quick: bool, train_minutes: float) -> Path:
    """Prepare chitchat and train a model into ``work`` (reused when already there)."""
    run = work / ("run-quick" if quick else "run")
    if (run / "best.pt").is_file():
        return run
    data = work / ("data-quick" if quick else "data")
    if not (data / "metadata.json").is_file():
        options = ["--max-pairs", "3000"] if quick else []
        if padless(["prepare", "chitchat", "--out", str(data), "--min-count", "3",
                    "--max-length", "20", *options]) != 0:
            raise SystemExit("bench_serve: preparing chitchat failed")
    settings = (["--max-steps", "5", "--set", "model.hidden_size=32",
                 "--set", "model.embedding_size=32"] if quick
                else ["--max-time", str(train_minutes)])
    if padless(["train", "--data", str(data), "--out", str(run), *settings]) != 0:
        raise SystemExit("bench_serve: training failed")
    return run


def describe_lengths(lengths: list[int], max_length: int = 30) -> str:
    """Answer lengths in tokens: mean, median and the share cut at the server's max length."""
    cut = sum(n >= max_length for n in lengths) / len(lengths)
    return (f"answers of {statistics.mean(lengths):.1f} tokens on average (median "
            f"{statistics.median(lengths):g}), {cut:.0%} cut at {max_length}")


def percentile(values: list[float], q: int) -> float:
    """The ``q``-th percentile (inclusive method), in milliseconds; nan without values."""
    if len(values) < 2:
        return values[0] * 1000 if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def measure(servers: dict[str, Server], levels: list[int], bodies: list[bytes],
            args: argparse.Namespace) -> dict[tuple[str, int], list[Turn]]:
    """Every (mode, clients) turn, modes alternating within each level, round after round."""
    turns: dict[tuple[str, int], list[Turn]] = {}
    for round_index in range(args.rounds):
        for clients in levels:
            order = list(servers) if round_index % 2 == 0 else list(servers)[::-1]
            for mode in order:
                turn = asyncio.run(run_turn(servers[mode].port, clients, bodies, args.warmup,
                                            args.seconds, args.max_requests))
                turns.setdefault((mode, clients), []).append(turn)
                print(f"  round {round_index + 1}, {clients:>3} clients, {mode:<13}: "
                      f"{turn.requests_per_s:7.1f} req/s, p50 "
                      f"{percentile(turn.latencies, 50):7.1f} ms, errors {turn.errors}",
                      flush=True)
    return turns


def report(
    turns: dict[tuple[str, int], list[Turn]],
    levels: list[int],
    latency_goal: float = 2.0,
) -> list[str]:
    """The markdown table and the goals' verdicts (lines)."""
    rows = ["| clients | server | requests/s (median) | p50 ms | p95 ms | p99 ms | "
            "requests | errors |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    summary: dict[tuple[str, int], tuple[float, float]] = {}
    for clients in levels:
        for mode in MODES:
            group = turns[mode, clients]
            latencies = [x for turn in group for x in turn.latencies]
            rate = statistics.median(turn.requests_per_s for turn in group)
            p50 = percentile(latencies, 50)
            summary[mode, clients] = (rate, p50)
            rows.append(f"| {clients} | {mode} | {rate:.1f} | {p50:.1f} | "
                        f"{percentile(latencies, 95):.1f} | {percentile(latencies, 99):.1f} | "
                        f"{len(latencies)} | {sum(t.errors for t in group)} |")
    verdicts = []
    if 32 in levels and 1 in levels:
        lone = summary[ALONE, 1][1]
        for mode in (DEFAULT, "static batches"):
            speedup = summary[mode, 32][0] / summary[ALONE, 32][0]
            ratio = summary[mode, 32][1] / lone
            goal = " (the goals)" if mode == DEFAULT else ""
            verdicts += [
                f"- {mode}{goal}, 32 clients: {speedup:.1f}x the requests/s of one at a time "
                f"(goal >= 5x: {'met' if speedup >= 5 else 'missed'}); p50 latency "
                f"{ratio:.2f}x a lone request's {lone:.1f} ms (goal <= {latency_goal:g}x: "
                f"{'met' if ratio <= latency_goal else 'missed'})",
            ]
    return [*rows, "", *verdicts]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: train one)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_serve"),
                        help="where the default model is prepared and trained (reused)")
    parser.add_argument("--train-minutes", type=float, default=3.0)
    parser.add_argument("--clients", default="1,8,32,128", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured per turn")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured, per turn")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-requests", type=int, default=20_000, help="per turn")
    parser.add_argument("--threads", type=int, default=1, help="decoding threads per server")
    parser.add_argument("--precision", default="auto",
                        help="the default server's --precision; the others use its choice")
    parser.add_argument("--results", type=Path,
                        default=Path(__file__).with_name("RESULTS.md"),
                        help="file whose bench_serve section is rewritten (not with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny model, 1 and 8 clients, 2 s turns, no file")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds, args.warmup, args.rounds = "1,8", 2.0, 0.5, 1
    return args


def main() -> None:
    args = parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    run = args.run or prepare_run(args.work, args.quick, args.train_minutes)
    bodies = [json.dumps({"message": p}).encode() for p in prompts(run)]
    logs = Path(args.work)
    logs.mkdir(parents=True, exist_ok=True)
    # the default server chooses the precision (--precision auto measures at its batch size);
    # the others are told the same, so their answers differ by the batching alone
    first = Server(run, [*MODES[DEFAULT], "--precision", args.precision], args.threads,
                   logs / "server-0.log")
    servers = {DEFAULT: first, **{
        mode: Server(run, [*extra, "--precision", first.precision], args.threads,
                     logs / f"server-{i}.log")
        for i, (mode, extra) in enumerate(MODES.items()) if mode != DEFAULT}}
    try:
        check = bodies[:128]
        alone = asyncio.run(answers(servers[ALONE].port, check, together=False))
        same = {mode: sum(a == b for a, b in zip(asyncio.run(answers(
            servers[mode].port, check, together=True)), alone, strict=True))
            for mode in MODES if mode != ALONE}
        lengths = describe_lengths([len(tokens) for tokens in alone])
        print(f"answers equal to one at a time's, of {len(check)}: {same}; {lengths}",
              flush=True)
        turns = measure(servers, levels, bodies, args)
    finally:
        codes = [server.stop() for server in servers.values()]
    checkpoint = Checkpoint.load(RunDirectory(run).best, mmap=True)
    arch = checkpoint.model_config().arch
    what = (
        f"; {args.threads} decoding thread(s) per server, precision {first.precision} "
        f"(`--precision {args.precision}`, the default server's choice, for all). "
        f"Model: {run}, step {checkpoint.step}, vocabulary {checkpoint.vocab_size}, "
        f"{checkpoint.config['model']}. Greedy answers of at most 30 tokens to the test "
        f"split's messages; "
        f"{args.seconds:g} s measured per turn after {args.warmup:g} s, {args.rounds} "
        f"round(s). Answers equal to one at a time's, of {len(check)}: {same}; "
        f"{lengths} (a batch lasts as long as its longest answer). "
        f"Servers exited with {codes} after SIGTERM."
    )
    # one section per architecture: the GRU's figures stay beside the Transformer's
    publish("bench_serve" if arch == "gru" else f"bench_serve-{arch}",
            f"Serving a {arch} model (`bench_serve.py`)", "bench_serve.py", None, what,
            report(turns, levels, latency_goal=2.0 if arch == "gru" else 3.0),
            write=not args.quick, results=args.results)


if __name__ == "__main__":
    main()
