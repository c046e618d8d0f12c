"""The house rules: which folder may import which, the library needs only torch, sizes.

Layers, lowest first: the library (``padless.masking``, ``padless.losses``,
``padless._tokens``, ``padless._chunked_ce``, the ``padless`` namespace itself) <-
``runtime`` <- ``data`` <- ``models`` <- ``runs`` <- ``training`` and ``decoding`` (siblings:
neither imports the other) <- ``serving`` <- ``commands`` (and ``padless.cli``). A module
may import its own layer and lower ones; decoding a trained model (serving, and the
commands that decode) loads nothing of training. Files stay under 400 lines: a module
that grows past it holds two concerns.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "padless"
LIBRARY = {"padless", "padless.masking", "padless.losses", "padless._tokens",
           "padless._chunked_ce"}
LAYERS = {"library": 0, "runtime": 1, "data": 2, "models": 3, "runs": 4, "training": 5,
          "decoding": 5, "serving": 6, "commands": 7}
MAX_FILE_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    if module in LIBRARY:
        return "library"
    if module in ("padless.cli", "padless.__main__"):
        return "commands"
    return module.split(".")[1]


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the file, nested ones (in functions) included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down_the_layers(path: Path) -> None:
    source = module_name(path)
    source_layer = layer_of(source)
    for line, target in imports(path):
        if target.split(".")[0] != "padless":
            continue
        target_layer = layer_of(target)
        where = f"{path}:{line}: {source} ({source_layer}) imports {target} ({target_layer})"
        assert LAYERS[target_layer] <= LAYERS[source_layer], where
        if LAYERS[target_layer] == LAYERS[source_layer]:
            assert target_layer == source_layer, where  # training and decoding are siblings


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle, deferred imports (inside functions) included: a cycle is two
    modules that are one concern, or a piece that belongs below both."""
    names = {module_name(p): p for p in MODULES}
    graph = {name: sorted({target for _, target in imports(path)} & set(names) - {name})
             for name, path in names.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):] + [name]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        for target in graph[name]:
            visit(target, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


@pytest.mark.parametrize("path", [p for p in MODULES if module_name(p) in LIBRARY],
                         ids=lambda p: module_name(p))
def test_the_library_imports_only_torch_and_the_standard_library(path: Path) -> None:
    for line, target in imports(path):
        top = target.split(".")[0]
        if top == "padless":
            assert target in LIBRARY, f"{path}:{line}: the library imports {target}"
        else:
            assert top == "torch" or top in sys.stdlib_module_names, (
                f"{path}:{line}: the library imports {target}")


def test_the_library_works_without_the_application_dependencies() -> None:
    """``pip install padless`` brings torch only: the library must not need the app extra."""
    blocked = ["yaml", "tqdm", "sacrebleu", "sentencepiece", "matplotlib", "chitchat_dataset"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # importing it now fails\n"
        "import torch\n"
        "from padless import pad_batch, lengths_to_mask, masked_cross_entropy\n"
        "from padless import masked_linear_cross_entropy, masked_nll_loss\n"
        "padded, lengths = pad_batch([[1, 2], [3]])\n"
        "logits = torch.randn(*padded.shape, 5)\n"
        "print(masked_cross_entropy(logits, padded, lengths_to_mask(lengths)).n_tokens)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"


def test_the_command_without_the_application_dependencies_says_what_to_install() -> None:
    code = ("import sys\nsys.modules['tqdm'] = None\n"
            "from padless.cli import main\nsys.exit(main(['prepare', 'chitchat', '--out', 'x']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "pip install 'padless[app]'" in done.stderr and "tqdm" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_files_stay_under_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES, f"{path}: {lines} lines (> {MAX_FILE_LINES})"


def test_decoding_commands_load_nothing_of_training() -> None:
    """Imported with everything they import: a server or a chat never loads the trainer."""
    commands = ["chat", "translate", "evaluate", "serve"]
    code = ("import sys\n" + "".join(f"import padless.commands.{c}\n" for c in commands)
            + "import padless.serving.server\n"
            "print(sorted(m for m in sys.modules if m.startswith('padless.training')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
