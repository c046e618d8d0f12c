"""Schemathesis against ``padless serve``: no 5xx, and ``/openapi.json`` tells the truth.

Starts ``padless serve`` on 127.0.0.1 (a port of its own), points schemathesis at its
``/openapi.json`` with every check (server errors, status codes, response schemas, schema-valid
bodies accepted and schema-violating ones refused), bounded in examples per operation and in
time, then stops the server with SIGTERM and checks it exited 0 without a traceback.

The checks' expected statuses are the API's documented ones: a schema-valid body may still
get 413 (more tokens than ``--max-input-tokens``: a count the tokenizer decides, which no
JSON schema can state), 429, 503 or 504 (load and shutdown); a schema-violating one 400, 413
or 422.

Needs schemathesis (``pip install schemathesis``; not a dependency of padless). Without
``--run`` it trains a tiny run first (a few seconds).

    python -m tests.serving.fuzz_api                      # writes RESULTS.md
    python -m tests.serving.fuzz_api --run RUN_DIR --max-examples 50 --no-write
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import publish

CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "413", "429", "503", "504"]

[checks.negative_data_rejection]
expected-statuses = ["400", "413", "422"]
"""
PAIRS = [("hi", "hello !"), ("how are you ?", "fine , thanks ."),
         ("do you like music ?", "yes , jazz ."), ("where are you from ?", "from paris .")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="run directory to serve (default: a tiny one)")
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds, at most")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def padless(*argv: str) -> list[str]:
    return [sys.executable, "-m", "padless", *argv]


def tiny_run(root: Path) -> Path:
    """A run trained for a few steps on a few dozen pairs (what the tests serve)."""
    corpus = root / "pairs.tsv"
    corpus.write_text("".join(f"{q} {i}\t{a}\n" for i in range(10) for q, a in PAIRS))
    subprocess.run(padless("prepare", str(corpus), "--format", "tsv", "--out",
                           str(root / "data")), check=True, capture_output=True)
    subprocess.run(padless("train", "--data", str(root / "data"), "--out", str(root / "run"),
                           "--max-steps", "4", "--set", "model.embedding_size=16",
                           "--set", "model.hidden_size=16", "--set", "model.num_layers=1"),
                   check=True, capture_output=True)
    return root / "run"


def start_server(run: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(padless("serve", str(run), "--host", "127.0.0.1", "--port", "0",
                                      "--threads", "1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = server.stdout.readline()
    match = re.search(r"at (http://127\.0\.0\.1:\d+)/", first)
    if not match:
        server.kill()
        raise SystemExit(f"padless serve did not start: {first}{server.stderr.read()}")
    return server, match.group(1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    beside = Path(sys.executable).with_name("schemathesis")  # this venv's, if not on PATH
    st = shutil.which("schemathesis") or (str(beside) if beside.exists() else None)
    if st is None:
        raise SystemExit("fuzz_api: schemathesis is not installed (pip install schemathesis)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = args.run or tiny_run(root)
        (root / "schemathesis.toml").write_text(CONFIG)
        server, url = start_server(run)
        started = time.monotonic()
        try:
            fuzz = subprocess.run(
                [st, "--config-file", str(root / "schemathesis.toml"), "--no-color", "run",
                 f"{url}/openapi.json", "--checks", "all", "--max-examples",
                 str(args.max_examples), "--generation-deterministic", "--request-timeout",
                 "30"],
                capture_output=True, text=True, timeout=args.time_limit,
                cwd=root)  # its example database stays out of the checkout
        finally:
            server.send_signal(signal.SIGTERM)
            _, server_err = server.communicate(timeout=120)
        seconds = time.monotonic() - started
    report = fuzz.stdout + fuzz.stderr
    generated = re.search(r"(\d+) generated", report)
    failures = re.findall(r"^\s*❌ (ST\d+ [^:]+): (\d+)", report, re.M)
    clean_exit = server.returncode == 0 and "Traceback" not in server_err
    print(report)
    ok = fuzz.returncode == 0 and clean_exit
    result = (f"- Result: {generated.group(1) if generated else '?'} requests generated in "
              f"{seconds:.0f} s; "
              + ("no failure" if fuzz.returncode == 0 else
                 "failures: " + (", ".join(f"{name} ({n})" for name, n in failures)
                                 or f"schemathesis exited {fuzz.returncode}"))
              + f"; the server then stopped on SIGTERM with exit {server.returncode}"
              + ("" if clean_exit else " **and a traceback or a bad exit**") + ".")
    publish("fuzz_api", "The HTTP API under schemathesis (`fuzz_api.py`)", "fuzz_api.py", argv,
            f"; run {run.name if args.run else '(a tiny one, trained by the script)'}, "
            f"schemathesis `--checks all --max-examples {args.max_examples} "
            "--generation-deterministic`, 127.0.0.1 only.", [result],
            write=not args.no_write)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
