"""The server's limits and batching settings (imports nothing heavy: ``padless serve``'s
options are generated from it without loading the web framework)."""

from __future__ import annotations

from dataclasses import dataclass

from padless.runtime.options import check_options, option

__all__ = ["ServeSettings"]


# Every limit has an upper bound too: a value past what any server needs breaks a timer or
# an allocation later, in the decoding thread (--max-wait-ms 1e308 overflowed its wait),
# instead of at start.
@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the server; each field is a ``padless serve`` option.

    Raises:
        ConfigError: naming the first bad field (``serve.max_batch_size: ...``).
    """

    max_chars: int = option(1000, "at most this many characters per message or line",
                            flag="--max-chars", minimum=1, maximum=10_000_000)
    max_input_tokens: int = option(50, "at most this many tokens per message or line",
                                   flag="--max-input-tokens", minimum=1, maximum=100_000)
    max_lines: int = option(64, "at most this many lines per translate request",
                            flag="--max-lines", minimum=1, maximum=100_000)
    max_beam: int = option(8, "at most this many beams a request may ask for",
                           flag="--max-beam", metavar="K", minimum=1, maximum=1024)
    max_batch_size: int = option(32, "sentences decoded together (1: one request at a time)",
                                 flag="--max-batch-size", minimum=1, maximum=65_536)
    max_wait_ms: float = option(5.0, "how long a request waits for others to join its batch",
                                flag="--max-wait-ms", metavar="MS", minimum=0,
                                maximum=60_000)  # a minute
    max_queue: int = option(256, "at most this many waiting requests before answering 429",
                            flag="--max-queue", minimum=1, maximum=10_000_000)
    timeout_s: float = option(30.0, "answer 504 to a request not done within S seconds",
                              flag="--timeout", metavar="S", minimum=1e-3,
                              maximum=86_400)  # a day
    max_body_bytes: int = option(1 << 20, "at most this many bytes per request body (larger "
                                 "ones get 413 before they are read)", flag="--max-body-bytes",
                                 minimum=1, maximum=1 << 34)
    threads: int | None = option(None, "torch threads for decoding (default: one per free "
                                 "core but one, kept for HTTP; see padless/runtime/threads.py)",
                                 flag="--threads", minimum=1, maximum=4096)
    continuous_batching: bool = option(True, "greedy and sampling requests join and leave a "
                                       "running batch at every step (off: a batch runs to its "
                                       "end before the next starts)",
                                       flag="--no-continuous-batching")

    def __post_init__(self) -> None:
        check_options(self, "serve")
