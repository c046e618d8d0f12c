"""A ``padless serve`` process for the serving benchmarks, and the messages they send it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from padless.runs.directory import RunDirectory
from padless.runs.info import read_run_info

FALLBACK_PROMPTS = ["hi", "how are you ?", "what is your name ?", "where do you live ?",
                    "do you like music ?", "what did you do today ?", "tell me a joke"]


class Server:
    """A ``padless serve`` process on a free loopback port."""

    def __init__(self, run: Path, extra: list[str], threads: int, log: Path) -> None:
        self.log = log.open("w")
        argv = [sys.executable, "-m", "padless", "serve", str(run), "--port", "0",
                "--threads", str(threads), "--timeout", "600", "--max-queue", "4096", *extra]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            raise SystemExit(f"the server did not start: {line!r}; see {log}")
        self.port = int(match.group(1))
        chosen = re.search(r"precision: (\w+)", self.process.stdout.readline())
        self.precision = chosen.group(1) if chosen else "?"

    def stop(self) -> int:
        """SIGTERM: the server drains and exits (0 expected)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=600)
        self.log.close()
        return code


def prompts(run: Path, limit: int = 2000) -> list[str]:
    """Sources of the run's test split (its own words), or a fixed list."""
    data = read_run_info(RunDirectory(run)).data_dir
    path = Path(data) / "test.tsv" if data else None
    if path is None or not path.is_file():
        return FALLBACK_PROMPTS
    lines = path.read_text(encoding="utf-8").splitlines()[:limit]
    return [line.split("\t")[0] for line in lines if line.split("\t")[0].strip()]
