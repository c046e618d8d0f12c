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


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize("started", [None, _ignore_ctrl_c], ids=["at a prompt", "in background"])
def test_a_second_ctrl_c_answers_the_requests_in_flight_with_503(qa_run_dir: Path,
                                                                 started) -> None:
    """It used to give 17 of 20 clients a 500 (CancelledError), then abort (rc 134); started
    in the background by a script (Ctrl-C ignored until uvicorn takes it), it exited 0."""
    server = subprocess.Popen(
        [sys.executable, "-m", "padless", "serve", str(qa_run_dir), "--port", "0",
         "--device", "cpu", "--max-batch-size", "1", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=started,
    )
    try:
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", server.stdout.readline())
        assert match, server.stderr.read()
        url = match.group(1)
        work = {"lines": [f"{q} and {q}" for q in QUESTIONS[:8]] * 4, "beam": 8}
        results: list[tuple[int, dict]] = []
        clients = [threading.Thread(target=lambda: results.append(
            post(f"{url}/v1/translate", work))) for _ in range(6)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 60
        while True:
            health = get_json(f"{url}/healthz")
            if health["in_flight"] > 0 and health["in_flight"] + health["queued"] == 6:
                break
            assert time.monotonic() < deadline, f"the requests never reached the model: {health}"
        server.send_signal(signal.SIGINT)
        # the second Ctrl-C once the first has been taken (two at once may arrive as one)
        for line in server.stderr:
            if "Shutting down" in line:
                break
        server.send_signal(signal.SIGINT)
        for client in clients:
            client.join(timeout=120)
        out, err = server.communicate(timeout=120)
    finally:
        server.kill()
    assert server.returncode == 130, err
    assert len(results) == 6, results
    statuses = sorted(status for status, _ in results)
    assert set(statuses) <= {200, 503} and 503 in statuses, results
    assert all(body["detail"] == "the server stopped before the answer"
               for status, body in results if status == 503)
    assert "Traceback" not in err and "terminate called" not in err, err


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
    # values past what any server needs, which broke a timer in the decoding thread later
    code = main(["serve", str(qa_run_dir), "--max-wait-ms", "1e308"])
    assert_one_line_error(code, capsys.readouterr().err, "serve", "--max-wait-ms", "60000")
    code = main(["serve", str(qa_run_dir), "--timeout", "1e300"])
    assert_one_line_error(code, capsys.readouterr().err, "serve", "--timeout", "86400")
    # and the same values from Python are checked by ServeSettings
    with pytest.raises(UserError, match=r"serve.max_batch_size: must be an integer >= 1 "
                                          r"and <= 65536, got 0"):
        ServeSettings(max_batch_size=0)
    with pytest.raises(UserError, match="serve.timeout_s: expected a finite number, got nan"):
        ServeSettings(timeout_s=float("nan"))
    with pytest.raises(UserError, match=r"serve.max_wait_ms: must be a finite number >= 0 "
                                          "and <= 60000"):
        ServeSettings(max_wait_ms=1e308)


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
