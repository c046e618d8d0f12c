"""YAML that people give padless (configs, ``--set`` values, chatterbot corpora):
:func:`load_yaml` and the one-line description of what is wrong with it.

``yaml.safe_load`` builds no objects, but it does expand aliases: a few hundred bytes of
nested ``&a [*b, *b, ...]`` anchors (the "billion laughs") become a value whose repr or walk
takes minutes and gigabytes. padless's YAML never needs an alias, so they are refused.
"""

from __future__ import annotations

import yaml

__all__ = ["YamlProblem", "load_yaml"]


class YamlProblem(ValueError):
    """YAML that does not parse, or that uses an alias. ``line`` is 1-based (None if
    unknown); ``str()`` is one line, without PyYAML's quoted context."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.line = line


class _NoAliases(yaml.SafeLoader):
    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise YamlProblem("aliases (*name) are not allowed", mark.line + 1)
        return super().compose_node(parent, index)


def load_yaml(text: str) -> object:
    """``text`` parsed as YAML (plain data only, as ``yaml.safe_load``), without aliases.

    Raises:
        YamlProblem: on broken YAML, an alias, nesting too deep for Python, or a value YAML
            parses but cannot build (a date like 2001-13-01).
    """
    try:
        return yaml.load(text, Loader=_NoAliases)  # noqa: S506 (a SafeLoader)
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise YamlProblem(str(e.problem or e.context or "broken YAML"),
                          mark.line + 1 if mark is not None else None) from None
    except RecursionError:
        raise YamlProblem("nested too deeply", None) from None
    except (yaml.YAMLError, OverflowError, ValueError) as e:  # 2001-13-01, \U0011ffff
        raise YamlProblem(_first_line(e), None) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
