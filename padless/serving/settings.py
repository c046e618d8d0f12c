"""The server's limits and batching settings (imports nothing heavy: ``padless serve``'s
options are built from it without loading the web framework)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from padless.runtime.errors import UserError

__all__ = ["ServeSettings", "bounds"]


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the server (``padless serve`` options of the same names).

    Attributes:
        max_chars: characters per message or translate line.
        max_input_tokens: tokens per message or line, after the run's tokenizer.
        max_lines: lines per translate request.
        max_beam: the largest beam a request may ask for.
        max_batch_size: sentences decoded together (1: one request at a time).
        max_wait_ms: how long a request may wait for others to share its batch.
        max_queue: waiting requests before the server answers 429.
        timeout_s: a request not answered within this time gets 504.
        max_body_bytes: larger request bodies get 413 before they are read.
        threads: torch threads of the decoding worker (None: torch's setting, which
            ``padless serve`` chose at start, keeping a core for the event loop:
            :mod:`padless.runtime.threads`).
        continuous_batching: greedy requests join and leave a running batch at every
            decoding step (False: a batch runs to its end before the next starts).
    """

    max_chars: int = 1000
    max_input_tokens: int = 50
    max_lines: int = 64
    max_beam: int = 8
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    timeout_s: float = 30.0
    max_body_bytes: int = 1 << 20
    threads: int | None = None
    continuous_batching: bool = True

    def __post_init__(self) -> None:
        """Reject a bad value, naming it (the command's option has the same name)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "threads" and value is None:
                continue
            if f.name == "continuous_batching":
                if not isinstance(value, bool):
                    raise UserError(f"{f.name} must be true or false, got {value!r}")
                continue
            least, most = _BOUNDS[f.name]
            number = int | float if isinstance(least, float) else int
            kind = "a number" if isinstance(least, float) else "an integer"
            if isinstance(value, bool) or not isinstance(value, number) or not (
                    math.isfinite(value) and least <= value <= most):
                raise UserError(f"{f.name} must be {kind} in [{least:g}, {most:g}], "
                                f"got {value!r}")


def bounds(name: str) -> tuple[float, float]:
    """The least and the most a setting may be (``padless serve``'s options check the same)."""
    return _BOUNDS[name]


# Upper bounds too: a value past what any server needs breaks a timer or an allocation later,
# in the decoding thread (--max-wait-ms 1e308 overflowed its wait), instead of at start.
_BOUNDS: dict[str, tuple[float, float]] = {
    "max_chars": (1, 10_000_000),
    "max_input_tokens": (1, 100_000),
    "max_lines": (1, 100_000),
    "max_beam": (1, 1024),
    "max_batch_size": (1, 65_536),
    "max_wait_ms": (0.0, 60_000.0),  # a minute
    "max_queue": (1, 10_000_000),
    "timeout_s": (1e-3, 86_400.0),  # a day
    "max_body_bytes": (1, 1 << 34),
    "threads": (1, 4096),
}
