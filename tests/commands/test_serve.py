"""``padless serve`` as a process: start-up errors, and SIGTERM drains the work and exits 0."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from padless.cli import main
from padless.runtime.errors import UserError
from padless.serving.server import bind
from padless.serving.settings import ServeSettings
from tests.helpers import QUESTIONS, assert_one_line_error


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_sigterm_finishes_the_requests_in_flight_then_exits_0(qa_run_dir: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "padless", "serve", str(qa_run_dir), "--port", "0",
         "--device", "cpu", "--max-batch-size", "1", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = server.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", first)
        assert match, first + server.stderr.read()
        url = match.group(1)
        work = {"lines": [f"{q} and {q}" for q in QUESTIONS[:8]], "beam": 8}
        results: list[tuple[int, dict]] = []
        clients = [threading.Thread(target=lambda: results.append(
            post(f"{url}/v1/translate", work))) for _ in range(6)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 60
        while True:  # until the server has taken all six and the model works on one
            health = get_json(f"{url}/healthz")
            taken = health["requests"] + health["in_flight"] + health["queued"]
            if health["in_flight"] > 0 and taken == 6:
                break
            assert time.monotonic() < deadline, f"the requests never reached the model: {health}"
        server.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(timeout=120)
        out, err = server.communicate(timeout=120)
    finally:
        server.kill()
    assert server.returncode == 0, err
    # every request the server had taken was answered; none was cut off
    assert len(results) == 6 and all(status == 200 for status, _ in results), results
    assert all(len(body["translations"]) == 8 for _, body in results)
    assert "padless serve: stopped" in out and "Traceback" not in err
    with pytest.raises(urllib.error.URLError):  # and nothing listens any more
        urllib.request.urlopen(f"{url}/healthz", timeout=5)


def test_a_bad_run_directory_or_option_is_one_line_and_exit_2(
    tmp_path: Path, qa_run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", str(tmp_path / "nowhere"), "--port", "0"])
    assert_one_line_error(code, capsys.readouterr().err, "serve", "no such checkpoint")
    # option values are checked by argparse before anything loads
    code = main(["serve", str(qa_run_dir), "--max-batch-size", "0"])
    assert_one_line_error(code, capsys.readouterr().err, "serve", "--max-batch-size", ">= 1")
    code = main(["serve", str(qa_run_dir), "--timeout", "nan"])
    assert_one_line_error(code, capsys.readouterr().err, "serve", "--timeout", "finite")
    # and the same values from Python are checked by ServeSettings
    with pytest.raises(UserError, match="max_batch_size must be a positive integer"):
        ServeSettings(max_batch_size=0)
    with pytest.raises(UserError, match="timeout_s must be a finite number"):
        ServeSettings(timeout_s=float("nan"))


def test_a_port_in_use_is_one_line_and_exit_2(
    qa_run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        code = main(["serve", str(qa_run_dir), "--port", str(port), "--device", "cpu"])
    finally:
        taken.close()
    assert_one_line_error(code, capsys.readouterr().err, "serve",
                          f"cannot listen on 127.0.0.1:{port}")
