"""The server's limits and batching settings (imports nothing heavy: ``padless serve``'s
options are built from it without loading the web framework)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from padless.runtime.errors import UserError

__all__ = ["ServeSettings"]


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
            if f.name in ("max_wait_ms", "timeout_s"):
                least = 0.0 if f.name == "max_wait_ms" else 1e-3
                if isinstance(value, bool) or not isinstance(value, int | float) or not (
                        math.isfinite(value) and value >= least):
                    raise UserError(f"{f.name} must be a finite number >= {least:g}, "
                                     f"got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{f.name} must be a positive integer, got {value!r}")
