"""The README and docs/ tell the truth: the option tables are generated from the commands
and the option fields, the links lead somewhere, and the README's commands run as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from padless.cli import COMMANDS, build_parser
from padless.commands.reference import render, tables_in

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
# The README's commands that take minutes or run until stopped: checked to parse, not run.
NOT_RUN = {
    "padless chat runs/quickstart": "follows the quickstart",
    "padless train --data data/chitchat --out runs/chat --config transformer --max-time 30":
        "trains for 30 minutes (run below with a tiny model instead)",
    "padless train --data data/chitchat --out runs/chat --resume --max-time 30": "ditto",
    "torchrun --nproc_per_node=2 -m padless train --data data/chitchat --out runs/ddp":
        "trains until max_steps in two processes",
    "torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d --rdzv-endpoint=HOST0:29500 "
    "--rdzv-id=chat -m padless train --data data/chitchat --out runs/ddp":
        "needs two machines (tests/training/test_multinode.py runs two node agents on one)",
    "padless serve runs/chat": "serves until stopped",
    "padless import opus-mt-en-fr --out runs/opus-en-fr": "needs a model downloaded",
    "padless prepare train.en train.fr --out data/mine --text-from runs/opus-en-fr": "ditto",
    "padless train --data data/mine --out runs/mine --init-from runs/opus-en-fr --max-time 60":
        "ditto",
}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_option_tables_are_up_to_date(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert render(text) == text, (f"{page}: an option table is out of date; run "
                                  "python -m padless.commands.reference")


def test_every_command_has_an_option_table() -> None:
    found = {name for page in PAGES for name in tables_in(page.read_text(encoding="utf-8"))}
    assert {f"padless {c}" for c in COMMANDS} <= found
    assert {"model", "train"} <= found


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_link_leads_to_a_file_and_heading(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{page.name}: no heading #{anchor}"


def test_the_readme_is_a_front_door_that_finds_every_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for page in PAGES:
        assert f"docs/{page.name}" in text, f"the README does not link to {page.name}"


def readme_commands() -> list[str]:
    """The commands of the README's shell blocks (its set-up lines left out)."""
    blocks = re.findall(r"^```\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():  # continued lines joined
            line = re.sub(r" +", " ", line.split(" #")[0].strip())
            if re.match(r"(printf .*\| )?(padless|torchrun) ", line) or line == "padless demo":
                commands.append(line)
    return commands


def _arguments(command: str) -> list[str]:
    """The ``padless`` arguments of a README command line (pipes and redirections off)."""
    words = shlex.split(command.split("| ")[-1].split(" <")[0].split(" >")[0])
    return words[words.index("padless") + 1:]


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command: str) -> None:
    build_parser().parse_args(_arguments(command))


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    """In a fresh folder, one after the other as a user would; the run they decode with is
    the README's training command on a tiny model, a few steps long."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    (tmp_path / "questions.txt").write_text("hi\nhow are you ?\n", encoding="utf-8")

    def run(command: str) -> None:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"

    commands = readme_commands()
    assert set(NOT_RUN) <= set(commands), "NOT_RUN names a command the README no longer has"
    tiny = ("--set model.embedding_size=16 --set model.hidden_size=16 --set model.num_layers=1 "
            "--set model.num_heads=2 --set model.ffn_size=32 --set train.valid_every=1 "
            "--set train.keep_best=3 --set train.max_tokens=256 --set train.precision=fp32")
    trained = False
    for command in commands:
        if command in NOT_RUN:
            continue
        if "runs/chat" in command and not trained:  # after the README's prepare
            run(f"padless train --data data/chitchat --out runs/chat --config transformer "
                f"--max-steps 3 {tiny}")
            trained = True
        run(command)
    assert (tmp_path / "answers.txt").read_text().count("\n") == 2
    assert (tmp_path / "runs/chat/averaged.pt").exists()
    assert (tmp_path / "runs/chat-ct2/model.bin").exists()


def test_every_test_the_reliability_page_names_exists() -> None:
    """docs/reliability.md states each promise with its test: a renamed test must not leave
    a promise pointing nowhere (a name cut short with "…" names its beginning)."""
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    names = set(re.findall(r"`(test_\w+)(…)?`", text))
    defined = set(re.findall(r"^def (test_\w+)", "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py")), re.M))
    missing = [name for name, cut in names
               if not (any(d.startswith(name) for d in defined) if cut else name in defined)]
    assert names and not missing, missing
