"""padless against CTranslate2 on one trained Transformer run: answers, BLEU, chrF, speed.

The run's ``best`` checkpoint is exported (:func:`padless.runs.export.export_ctranslate2`,
float32 weights) and decoded four ways: padless in float32 and with ``--quantize int8`` (as
the commands load it), CTranslate2 with ``compute_type`` float32 and int8, all on the CPU with
the same number of threads. The search is each engine's plain one (padless's
``SearchOptions.plain``: no repetition control, which CTranslate2 does not have in the same
form), greedy and beam 5, at most 30 tokens; beam search normalises lengths its own way in
each engine (padless: GNMT's alpha 0.6; CTranslate2: ``length_penalty`` 1, its default). The
table says how many greedy answers CTranslate2 float32 gives exactly as padless float32 does.
Speed: the test split timed alternately, ``--rounds`` rounds, median sentences/s, at batches
of 64 and of 1 (the first ``--lone`` sentences).

    python -m benchmarks.bench_ctranslate2 RUN_DIR          # writes RESULTS.md
    python -m benchmarks.bench_ctranslate2 RUN_DIR --no-write --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import ctranslate2
import torch

from benchmarks.data import run_data_dir, run_parser
from benchmarks.results import publish
from padless.data.dataset import PreparedData
from padless.decoding.batched import decode_ids
from padless.decoding.metrics import text_scores
from padless.decoding.options import SearchOptions
from padless.models.decoding_setup import for_decoding
from padless.runs.export import export_ctranslate2
from padless.runs.loading import load_model
from padless.runtime.timing import alternating_times

MAX_LENGTH = 30
SEARCHES = {"greedy": 1, "beam 5": 5}
CANDIDATES = ("padless fp32", "padless int8", "CTranslate2 float32", "CTranslate2 int8")
Decoder = Callable[[list[list[int]], int, int], list[list[int]]]  # (sources, beam, batch)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = run_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lone", type=int, default=32, help="sentences decoded one at a time")
    return parser.parse_args(argv)


def padless_decoder(run_dir: Path, quantization: str | None) -> tuple[Decoder, str]:
    """Decoding as the commands do it (one model for every batch size)."""
    model, _, _ = load_model(run_dir, "best", "cpu")
    decoding = for_decoding(model, "fp32", quantization)

    def decode(sources: list[list[int]], beam: int, batch: int) -> list[list[int]]:
        options = SearchOptions.plain("beam" if beam > 1 else "greedy", beam_size=beam,
                                      max_length=MAX_LENGTH)
        return [h[0].tokens for h in decode_ids(decoding.model, sources, options,
                                                batch_size=batch)]

    return decode, decoding.describe()


def ctranslate2_decoder(path: Path, compute_type: str, tokens: list[str]) -> Decoder:
    translator = ctranslate2.Translator(str(path), device="cpu", compute_type=compute_type,
                                        inter_threads=1, intra_threads=torch.get_num_threads())
    ids = {token: i for i, token in enumerate(tokens)}

    def decode(sources: list[list[int]], beam: int, batch: int) -> list[list[int]]:
        # sorted by length into batches by CTranslate2 itself, as padless sorts its own
        results = translator.translate_batch(
            [[tokens[i] for i in source] for source in sources], max_batch_size=batch,
            beam_size=beam, max_decoding_length=MAX_LENGTH)
        return [[ids[t] for t in r.hypotheses[0]] for r in results]

    return decode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = run_data_dir(args.run_dir, args.data)
    test = PreparedData.load(data_dir).splits["test"]
    sources = [source for source, _ in test]
    _, text, _ = load_model(args.run_dir, "best", "cpu")
    tokens = text.vocab.tokens
    decoders: dict[str, Decoder] = {}
    decoders["padless fp32"], fp32_line = padless_decoder(args.run_dir, None)
    decoders["padless int8"], int8_line = padless_decoder(args.run_dir, "int8")
    print(f"padless fp32: {fp32_line}\npadless int8: {int8_line}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_ctranslate2(args.run_dir, Path(tmp) / "model")
        for compute_type in ("float32", "int8"):
            decoders[f"CTranslate2 {compute_type}"] = ctranslate2_decoder(
                exported, compute_type, tokens)
        answers = {(name, search): decode(sources, beam, 64)
                   for search, beam in SEARCHES.items() for name, decode in decoders.items()}
        lone = sources[: args.lone]
        jobs = {(name, search, batch): partial(decode, chosen, beam, batch)
                for search, beam in SEARCHES.items()
                for batch, chosen in ((64, sources), (1, lone))
                for name, decode in decoders.items()}
        times = alternating_times(jobs, rounds=args.rounds, warmup=0)  # answers above warmed up
        rates = {key: [len(sources if key[2] == 64 else lone) / t for t in spent]
                 for key, spent in times.items()}
    references = [text.decode(target) for _, target in test]
    same = sum(a == b for a, b in zip(answers["padless fp32", "greedy"],
                                      answers["CTranslate2 float32", "greedy"], strict=True))
    rows = []
    for search in SEARCHES:
        base = {batch: statistics.median(rates["padless fp32", search, batch]) for batch in (64, 1)}
        for name in CANDIDATES:
            bleu, chrf = text_scores([text.decode(a) for a in answers[name, search]], references)
            cells = []
            for batch in (64, 1):
                rate = statistics.median(rates[name, search, batch])
                cells.append(f"{rate:.1f} ({rate / base[batch]:.2f}x)")
            rows.append(f"| {search} | {name} | {bleu:.2f} | {chrf:.2f} | {' | '.join(cells)} |")
    publish("bench_ctranslate2", "padless against CTranslate2 (`bench_ctranslate2.py`)",
            "bench_ctranslate2.py", argv,
            f"; run {args.run_dir.name}, test split of {data_dir} ({len(test)} pairs), plain "
            f"search, at most {MAX_LENGTH} tokens, {torch.get_num_threads()} threads each; "
            f"ctranslate2 {ctranslate2.__version__}; padless int8: {int8_line}. Speed: median "
            f"of {args.rounds} alternating rounds, batches of 64 (the whole test split) and of "
            f"1 (its first {args.lone}); x: against padless fp32.",
            ["| search | engine | BLEU | chrF | sentences/s at 64 | sentences/s at 1 |",
             "|---|---|---|---|---|---|", *rows, "",
             f"Greedy answers of CTranslate2 float32 equal to padless fp32's: {same} of "
             f"{len(sources)}."],
            write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
