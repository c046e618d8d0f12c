"""``benchmarks/results.py``: every benchmark's RESULTS.md header, and its own section only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import benchmarks.results as results_file
from benchmarks.results import publish, write_section


def test_write_section_replaces_its_own_section_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    write_section(path, "a", "first a")
    write_section(path, "b", "only b")
    write_section(path, "a", "second a")
    text = path.read_text()
    assert "first a" not in text
    assert text.count("<!-- a:begin -->") == 1 and "second a" in text
    assert text.index("second a") < text.index("only b"), "a section moved"
    assert "<!-- b:begin -->\nonly b\n<!-- b:end -->" in text


def test_publish_says_date_machine_load_command_and_what(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    text = publish("bench_x", "X (`bench_x.py`)", "bench_x.py", ["--rounds", "3", "a b"],
                   "; what it measured.", ["| t |", "|---|"], write=True,
                   device=torch.device("cpu"), load_before=(0.25, 0.5, 1.0), results=path)
    lines = text.splitlines()
    assert lines[0] == "## X (`bench_x.py`)"
    date_line = lines[2]
    assert date_line.startswith("- Date: 20") and " UTC. Machine: " in date_line
    assert f"get_cpu_capability() {torch.backends.cpu.get_cpu_capability()}" in date_line
    assert "Load average (1/5/15 min) before: 0.25/0.50/1.00, after: " in date_line
    # the command is one a shell runs again: the argument with a space stays one
    command = "`python -m benchmarks.bench_x --rounds 3 'a b'`"
    assert lines[3] == f"- Command: {command}; what it measured."
    assert "Not an idle machine" not in text
    assert lines[-2:] == ["| t |", "|---|"]
    assert f"<!-- bench_x:begin -->\n{text}\n<!-- bench_x:end -->" in path.read_text()


def test_publish_warns_of_a_busy_machine_and_writes_nothing_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "RESULTS.md"
    text = publish("bench_x", "X", "bench_x.py", [], ".", ["body"], write=False,
                   load_before=(1.5, 1.0, 1.0), results=path)
    assert "**Not an idle machine**" in text
    assert "- Command: `python -m benchmarks.bench_x`." in text
    assert not path.exists()
    # by default "before" is the load when the benchmark started, not after its own warm-up
    monkeypatch.setattr(results_file, "LOAD_AT_START", (0.25, 2.0, 3.0))
    idle = publish("bench_x", "X", "bench_x.py", [], ".", ["body"], write=False, results=path)
    assert "Load average (1/5/15 min) before: 0.25/2.00/3.00, after: " in idle
    assert "Not an idle machine" not in idle
