"""``torchrun`` across machines: two node agents on this machine (``--nnodes 2
--nproc_per_node 1``, rendezvous ``c10d`` on 127.0.0.1), as two machines would run them. The
same weights as one process on the same global batches, each line said once, the run
written once; a node killed ends the other with one line, not a hang."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from padless.cli import main as cli_main
from padless.runs.checkpoint import Checkpoint
from tests.helpers import TINY_TRAIN, free_port, read_log, subprocess_env

# No dropout: masks drawn by two processes cannot match one's.
SETTINGS = [*TINY_TRAIN, "model.dropout=0", "train.word_dropout=0", "train.accumulate=2",
            "train.valid_every=2"]


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out),
            *[a for o in SETTINGS for a in ("--set", o)], *extra]


def _nodes(argv: list[str], port: int) -> list[subprocess.Popen]:
    """Two node agents of one job, each in its own session (so a test can kill one node,
    agent and worker, as a machine going down)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
               "--nproc_per_node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=padless-test",
               "--max-restarts=0", "-m", "padless", *argv]
    return [subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
            for _ in range(2)]


def _finish(nodes: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    results = []
    try:
        for node in nodes:
            out, err = node.communicate(timeout=timeout)
            results.append((node.returncode, out, err))
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    return results


def _padless_lines(text: str) -> list[str]:
    """What padless printed: torchrun's own log lines (``W1206 12:00:00.000 ...``,
    ``[W1206 ...]``) left out, its ``[rankN]:`` prefix of a worker's lines taken off."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^\[rank\d+\]:", "", line)
        if line.strip() and not re.match(r"\[?[IWE]\d{4} ", line):
            lines.append(line)
    return lines


def _tracebacks_of_padless(text: str) -> list[str]:
    """Traceback lines of padless's own code (not torchrun's, from site-packages)."""
    return [line for line in text.splitlines() if 'File "' in line
            and "site-packages" not in line and "<frozen" not in line]


@pytest.mark.slow
def test_two_nodes_train_as_one_process_and_say_each_line_once(reversal_data_dir: Path,
                                                               tmp_path: Path) -> None:
    single, multi = tmp_path / "single", tmp_path / "two-nodes"
    assert cli_main(_train_args(reversal_data_dir, single, "--max-steps", "4")) == 0
    nodes = _nodes(_train_args(reversal_data_dir, multi, "--max-steps", "4"), free_port())
    results = _finish(nodes, timeout=300)
    for code, _, err in results:
        assert code == 0, err[-3000:]

    one, two = Checkpoint.load(single / "latest.pt"), Checkpoint.load(multi / "latest.pt")
    assert two.world_size == 2
    for name, tensor in one.weights.items():  # float error only (see test_trainer's DDP test)
        torch.testing.assert_close(two.weights[name], tensor, rtol=1e-5, atol=2e-5)
    for a, b in zip(read_log(single, "train"), read_log(multi, "train"), strict=True):
        assert (a["step"], a["tokens"]) == (b["step"], b["tokens"])
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
    # each line once, from one node: the other node's process only computes
    said = [_padless_lines(out) for _, out, _ in results]
    assert sorted(len(lines) > 0 for lines in said) == [False, True], said
    lines = said[0] or said[1]
    repeated = [line for line, n in collections.Counter(lines).items() if n > 1]
    assert not repeated, lines
    assert sum("stopped at step 4" in line for line in lines) == 1
    # the run written once: one row per step, the files of one writer
    steps = [row["step"] for row in read_log(multi, "train")]
    assert steps == sorted(set(steps), key=int)
    assert not list(multi.glob("*.tmp")) and not list(multi.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_a_node_killed_ends_the_other_with_one_line(reversal_data_dir: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "run"
    nodes = _nodes(_train_args(reversal_data_dir, out, "--max-steps", "100000",
                               "--set", "train.log_every=1"), free_port())
    deadline = time.monotonic() + 240
    while not ((out / "log.csv").exists() and len(read_log(out, "train")) >= 3):
        assert time.monotonic() < deadline and all(n.poll() is None for n in nodes), (
            "training never started: " + "".join(_finish(nodes, 5)[i][2] for i in (0, 1)))
        time.sleep(0.1)
    started = time.monotonic()
    _kill_node(nodes[1])  # a machine gone: its agent and its worker
    (code, _, err), _ = _finish(nodes, timeout=180)
    assert code != 0
    assert time.monotonic() - started < 180
    errors = [line for line in _padless_lines(err) if line.startswith("padless train: ")]
    assert len(errors) == 1, err[-3000:]
    assert errors[0].startswith("padless train: error: another training process stopped"), errors
    assert "resume from" in errors[0] and "This is typically" not in errors[0]
    # torchrun's agent may add its own report (when the node that went hosted the
    # rendezvous); padless itself prints no traceback
    assert not _tracebacks_of_padless(err), err[-3000:]


def _kill_node(node: subprocess.Popen) -> None:
    """SIGKILL a node agent and its workers (torchrun starts each worker in a session of its
    own: killing the agent's alone leaves them training)."""
    def tree(pid: int) -> list[int]:
        children = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
        return [pid] + [p for child in children for p in tree(child)]

    for pid in tree(node.pid):
        os.kill(pid, signal.SIGKILL)
