"""Decoding speed: padless's batched greedy and beam search vs. the tutorial's greedy decoder.

The PyTorch chatbot tutorial answers one sentence at a time: its ``GreedySearchDecoder``
encodes a batch of one, starts the decoder from ``encoder_hidden[:n_layers]`` with SOS and
runs exactly ``max_length = 10`` decoder steps, taking ``torch.max`` of the softmax each
step, with no early stop at EOS (the words after EOS are dropped later, when printing).
That loop is written below as :func:`tutorial_greedy`, on the same model padless decodes
with (``Seq2Seq.start_decoding`` / ``decode_step``), so only the decoding algorithm differs.

All candidates run on the same inputs and the same randomly initialised model of the
tutorial's size (hidden 500, 2 layers, dot attention, a 7,826-word vocabulary like the
tutorial's trimmed Cornell one) under ``torch.no_grad`` (the tutorial itself keeps autograd
on while chatting, which would only make it slower). Candidates alternate round by round;
each figure is the median over rounds of sentences per second, written as section
``bench_decode`` of RESULTS.md unless ``--no-write``.

    python -m benchmarks.bench_decode [--sentences 512] [--rounds 5] [--batch-size 64] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch

from benchmarks.results import publish
from padless.data.vocabulary import BOS_ID, EOS_ID
from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.models.config import ModelConfig
from padless.models.seq2seq import Seq2Seq
from padless.runtime.devices import resolve_device
from padless.runtime.timing import alternating_times

TUTORIAL_VOCAB = 7826  # the tutorial's Cornell vocabulary after trimming (7823 words + 3)
MAX_LENGTH = 10  # the tutorial's MAX_LENGTH: both its inputs and its answers


@torch.no_grad()
def tutorial_greedy(model: Seq2Seq, sentence: list[int], device: torch.device) -> list[int]:
    """The tutorial's ``evaluate`` + ``GreedySearchDecoder`` for one sentence.

    Returns all ``MAX_LENGTH`` tokens, EOS and whatever follows it included, as it does.
    """
    input_batch = torch.tensor([sentence], dtype=torch.long, device=device).t()  # [S, 1]
    lengths = torch.tensor([len(sentence)])
    state = model.start_decoding(input_batch, lengths)  # encoder + its final states
    decoder_input = torch.full((1,), BOS_ID, dtype=torch.long, device=device)
    all_tokens = torch.zeros(0, dtype=torch.long, device=device)
    all_scores = torch.zeros(0, device=device)
    for _ in range(MAX_LENGTH):
        decoder_output, state, _ = model.decode_step(decoder_input, state)
        decoder_scores, decoder_input = torch.max(decoder_output, dim=1)
        all_tokens = torch.cat((all_tokens, decoder_input), dim=0)
        all_scores = torch.cat((all_scores, decoder_scores), dim=0)
    return all_tokens.tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch intra-op threads (default: torch's); 1 avoids waiting for "
                             "a second thread on a machine busy with other work")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = ModelConfig(embedding_size=500, hidden_size=500, num_layers=2, attention="dot",
                         dropout=0.1)
    model = Seq2Seq(config, TUTORIAL_VOCAB).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, MAX_LENGTH + 1, (args.sentences,), generator=generator)
    sentences = [
        torch.randint(4, TUTORIAL_VOCAB, (int(n),), generator=generator).tolist() for n in lengths
    ]
    # the model's own search, as the tutorial's: no repetition control, no minimum length
    greedy = SearchOptions.plain("greedy", max_length=MAX_LENGTH)
    beam = SearchOptions.plain("beam", beam_size=5, alpha=0.6, max_length=MAX_LENGTH)

    # The answers agree: batched greedy is the tutorial's answer cut at its first EOS. An
    # untrained model may pick PAD or BOS, which padless never outputs: up to there, then.
    batched = decode_ids(model, sentences, greedy, batch_size=args.batch_size)
    never = set(greedy.banned_ids(model.specials))
    checked = 0
    for sentence, (hyp, *_) in zip(sentences, batched, strict=True):
        reference = tutorial_greedy(model, sentence, device)
        cut = next((i for i, t in enumerate(reference) if t == EOS_ID or t in never), MAX_LENGTH)
        whole = cut == MAX_LENGTH or reference[cut] == EOS_ID
        assert (hyp.tokens if whole else hyp.tokens[:cut]) == reference[:cut], (
            f"batched greedy differs from the tutorial's on {sentence}")
        checked += whole
    print(f"batched greedy equals the tutorial's answer on all {len(sentences)} sentences "
          f"({len(sentences) - checked} up to a PAD or BOS the tutorial chose)", flush=True)

    candidates: dict[str, Callable[[], object]] = {
        "tutorial greedy, one sentence at a time": lambda: [
            tutorial_greedy(model, s, device) for s in sentences
        ],
        f"padless greedy, batches of {args.batch_size}": lambda: decode_ids(
            model, sentences, greedy, batch_size=args.batch_size
        ),
        f"padless beam 5, batches of {args.batch_size}": lambda: decode_ids(
            model, sentences, beam, batch_size=args.batch_size
        ),
    }
    rates = {name: [len(sentences) / t for t in times] for name, times in
             alternating_times(candidates, rounds=args.rounds).items()}

    baseline = statistics.median(rates["tutorial greedy, one sentence at a time"])
    rows = ["| decoder | sentences/s (median) | min-max | vs. tutorial |", "|---|---:|---:|---:|"]
    for name, values in rates.items():
        median = statistics.median(values)
        rows.append(f"| {name} | {median:.1f} | {min(values):.1f}-{max(values):.1f} | "
                    f"{median / baseline:.1f}x |")
    speedup = statistics.median(rates[f"padless greedy, batches of {args.batch_size}"]) / baseline
    rows += ["", f"Target (batched greedy at least 10x the tutorial): "
             f"**{'met' if speedup >= 10 else 'missed'}** ({speedup:.1f}x). Beam 5 does 5x the "
             "work of greedy and, with exact stopping, seldom stops before `max_length` on a "
             "random model. On a machine busy with other work, use `--threads 1` (see "
             "`bench_threads.py`): batched ops wait for a second intra-op thread otherwise."]
    publish("bench_decode", "Decoding speed (`bench_decode.py`)", "bench_decode.py", argv,
            f"; device {device}; {len(sentences)} random sentences of 1-{MAX_LENGTH} tokens, "
            f"tutorial-size model (hidden 500, 2 layers, dot attention, V={TUTORIAL_VOCAB}, "
            f"random init), answers of at most {MAX_LENGTH} tokens, under `torch.no_grad`; "
            "the tutorial's `GreedySearchDecoder` (one sentence at a time, always "
            f"{MAX_LENGTH} steps) against padless's length-sorted batches, whose rows leave at "
            f"EOS; checked first: batched greedy returns the tutorial's answers cut at their "
            f"first EOS ({len(sentences) - checked} only up to a PAD or BOS the tutorial chose, "
            f"which padless never outputs). Median of {args.rounds} alternating rounds.", rows,
            write=not args.no_write, device=device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
