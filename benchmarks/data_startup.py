"""Run by ``bench_data`` in a fresh process: how long and how much memory a training process
takes to open a prepared dataset and produce its first batch.

    python -m benchmarks.data_startup DATA_DIR      # prints one JSON line
"""

from __future__ import annotations

import json
import sys
import time

STARTED = time.perf_counter()  # before padless is imported: start-up counts its imports


def main(argv: list[str]) -> None:
    from padless.data.dataset import PreparedData
    from padless.data.loader import run_batches

    data = PreparedData.load(argv[0])
    batches, _ = run_batches(data.splits, max_length=1000, batch_size=None, max_tokens=4096,
                             seed=0, say=lambda _: None)
    next(batches)
    seconds = time.perf_counter() - STARTED
    with open("/proc/self/status", encoding="utf-8") as f:
        status = dict(line.split(":", 1) for line in f)
    mb = {key: int(status[key].split()[0]) / 1024 for key in ("VmHWM", "RssAnon", "RssFile")}
    print(json.dumps({"seconds": seconds, "pairs": len(data.splits["train"]), **mb}))


if __name__ == "__main__":
    main(sys.argv[1:])
