"""The dynamic batcher: answers equal decoding alone, grouping, limits, cancel, drain."""

from __future__ import annotations

from concurrent.futures import CancelledError
from pathlib import Path

import pytest
import torch

from padless.decoding.batched import decode_ids, make_generator
from padless.decoding.options import SearchOptions
from padless.decoding.search import Hypothesis
from padless.models.quantize import quantize
from padless.runs.directory import RunDirectory
from padless.runs.info import read_run_info
from padless.runs.loading import load_model
from padless.serving.batcher import DynamicBatcher, QueueFull, ShuttingDown
from tests.helpers import QUESTIONS, GatedModel, wait_until


@pytest.fixture(scope="module")
def model_and_sources(qa_run_dir: Path) -> tuple[torch.nn.Module, list[list[int]]]:
    model, text, _ = load_model(qa_run_dir, device="cpu")
    generator = torch.Generator().manual_seed(0)
    noise = [torch.randint(4, len(text.vocab), (int(n),), generator=generator).tolist()
             for n in torch.randint(1, 12, (8,), generator=generator)]
    return model, [text.encode(q) for q in QUESTIONS] + noise


def alone(model: torch.nn.Module, source: list[int], options: SearchOptions,
          seed: int | None = None) -> Hypothesis:
    generator = make_generator(seed, model.device) if seed is not None else None
    ((hyp,),) = decode_ids(model, [source], options, generator=generator)
    return hyp


def run_together(batcher: DynamicBatcher, jobs: list[tuple]) -> list[list[Hypothesis]]:
    """Submit every job before the worker starts, so they wait together; then decode: each
    job's sources' best hypotheses."""
    futures = [batcher.submit(*job[:2], seed=job[2] if len(job) > 2 else None) for job in jobs]
    batcher.start()
    try:
        return [[nbest[0] for nbest in future.result(timeout=60)] for future in futures]
    finally:
        batcher.close()


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "static"])
@pytest.mark.parametrize("options", [
    SearchOptions(max_length=12),
    SearchOptions(method="beam", beam_size=3, max_length=12),
    SearchOptions(method="greedy", max_length=12, min_length=0, allow_unk=True),
], ids=["greedy", "beam", "greedy-unrestricted"])
def test_a_batched_answer_equals_the_answer_alone(model_and_sources, options,
                                                  continuous) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, max_batch_size=64, max_wait_ms=0, continuous=continuous)
    results = run_together(batcher, [([s], options) for s in sources])
    assert batcher.stats.batches == 1 and batcher.stats.largest_batch == len(sources)
    for source, (hyp,) in zip(sources, results, strict=True):
        single = alone(model, source, options)
        assert hyp.tokens == single.tokens
        assert hyp.score == pytest.approx(single.score, abs=1e-4)
        assert hyp.finished == single.finished


@pytest.mark.parametrize("options", [
    SearchOptions(max_length=12), SearchOptions(method="beam", beam_size=3, max_length=12),
], ids=["greedy", "beam"])
def test_an_int8_answer_beside_other_requests_equals_the_answer_alone(model_and_sources,
                                                                      options,
                                                                      every_layer_int8) -> None:
    """``serve --quantize int8`` changed 9 of 60 greedy answers while other requests ran."""
    model, sources = model_and_sources
    quantized = quantize(model)
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    batcher = DynamicBatcher(quantized, max_batch_size=64, max_wait_ms=0)
    results = run_together(batcher, [([s], options) for s in sources])
    assert batcher.stats.largest_batch == len(sources)
    for source, (hyp,) in zip(sources, results, strict=True):
        single = alone(quantized, source, options)
        assert hyp.tokens == single.tokens
        # the float parts (attention over sources padded to the batch's longest) round alike
        assert hyp.score == pytest.approx(single.score, abs=1e-4)


def test_requests_with_other_options_get_their_own_batches(model_and_sources) -> None:
    model, sources = model_and_sources
    greedy, beam = SearchOptions(max_length=10), SearchOptions("beam", 10, beam_size=2)
    jobs = [([s], greedy if i % 2 else beam) for i, s in enumerate(sources[:10])]
    batcher = DynamicBatcher(model, max_batch_size=64, max_wait_ms=0)
    results = run_together(batcher, jobs)
    assert batcher.stats.batches == 2 and batcher.stats.largest_batch_requests == 5
    for (job_sources, options), (hyp,) in zip(jobs, results, strict=True):
        assert hyp.tokens == alone(model, job_sources[0], options).tokens


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "static"])
def test_batches_hold_at_most_max_batch_size_sentences(model_and_sources, continuous) -> None:
    model, sources = model_and_sources
    options = SearchOptions(max_length=10)
    jobs = [(sources[:3], options), ([sources[3]], options), (sources[4:6], options),
            (sources[6:13], options)]  # the last one is larger than a batch: decoded alone
    batcher = DynamicBatcher(model, max_batch_size=4, max_wait_ms=0, continuous=continuous)
    results = run_together(batcher, jobs)
    assert batcher.stats.largest_batch == 7 and batcher.stats.batches == 3
    for (job_sources, _), hyps in zip(jobs, results, strict=True):
        assert [h.tokens for h in hyps] == [alone(model, s, options).tokens for s in job_sources]


def test_seeded_sampling_is_decoded_alone_and_reproducible(model_and_sources) -> None:
    model, sources = model_and_sources
    options = SearchOptions("sample", 10, temperature=1.5)
    jobs = [([s], options, seed) for seed, s in enumerate(sources[:6])]
    batcher = DynamicBatcher(model, max_batch_size=64, max_wait_ms=0)
    results = run_together(batcher, jobs)
    assert batcher.stats.batches == len(jobs)  # one generator, one batch per seed
    for (job_sources, _, seed), (hyp,) in zip(jobs, results, strict=True):
        assert hyp.tokens == alone(model, job_sources[0], options, seed).tokens


def test_unseeded_sampling_requests_share_a_batch(model_and_sources) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, max_batch_size=64, max_wait_ms=0)
    results = run_together(batcher, [([s], SearchOptions("sample", 8)) for s in sources[:6]])
    assert batcher.stats.batches == 1
    assert all(len(hyp.tokens) >= 1 for (hyp,) in results)


def test_a_lone_request_is_decoded_at_once(model_and_sources) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, max_wait_ms=3_600_000)  # an hour, were it to wait
    batcher.start()
    try:
        for source in sources[:3]:
            assert batcher.submit([source], SearchOptions()).result(timeout=60)[0][0].tokens
    finally:
        batcher.close()


def test_after_requests_came_together_a_request_waits_for_company(model_and_sources) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, max_batch_size=2, max_wait_ms=3_600_000,
                             continuous=False)  # continuous batching never waits
    together = [batcher.submit([s], SearchOptions()) for s in sources[:2]]
    batcher.start()  # the two fill a batch and decode together...
    assert all(f.result(timeout=60) for f in together)
    future = batcher.submit([sources[2]], SearchOptions())
    # ...so the next one is held, waiting for others to join it
    wait_until(lambda: batcher.queue.holding == 1, "holding the request for company")
    assert not future.done()
    batcher.close()  # until the batcher closes: then it is decoded at once
    assert future.result(timeout=60)[0][0].tokens


class SubmitsWhileDecoding:
    """The model, but at its ``at``-th decoding step it calls ``then()`` (from the worker)."""

    def __init__(self, model: torch.nn.Module, at: int, then) -> None:
        self.model, self.at, self.then, self.steps = model, at, then, 0

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def decode_step(self, prev, state):
        self.steps += 1
        if self.steps == self.at:
            self.then()
        return self.model.decode_step(prev, state)


def test_a_request_joins_a_running_greedy_batch_at_the_next_step(model_and_sources) -> None:
    model, sources = model_and_sources
    options = SearchOptions(max_length=12)
    late: list = []
    wrapped = SubmitsWhileDecoding(model, 2, lambda: late.append(
        batcher.submit(sources[8:10], options)))
    batcher = DynamicBatcher(wrapped, max_wait_ms=0)
    (first,) = run_together(batcher, [(sources[:3], options)])
    assert batcher.stats.batches == 2 and batcher.stats.largest_batch_requests == 2
    joined = [nbest[0] for nbest in late[0].result(timeout=0)]
    for source, hyp in zip(sources[:3] + sources[8:10], first + joined, strict=True):
        expected = alone(model, source, options)
        assert hyp.tokens == expected.tokens
        assert hyp.score == pytest.approx(expected.score, abs=1e-4)


def test_no_request_joins_ahead_of_an_older_one_with_other_options(model_and_sources) -> None:
    model, sources = model_and_sources
    greedy, beam = SearchOptions(max_length=12), SearchOptions("beam", 12, beam_size=2)
    late: list = []
    wrapped = SubmitsWhileDecoding(model, 2, lambda: late.extend(
        [batcher.submit([sources[5]], beam), batcher.submit([sources[6]], greedy)]))
    batcher = DynamicBatcher(wrapped, max_wait_ms=0)
    run_together(batcher, [([sources[0]], greedy)])
    assert batcher.stats.largest_batch_requests == 1  # the greedy one waited for the beam one
    assert [f.result(timeout=0)[0][0].tokens for f in late] == [
        alone(model, sources[5], beam).tokens, alone(model, sources[6], greedy).tokens]


def test_a_full_queue_refuses_and_a_closed_batcher_refuses(model_and_sources) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, max_queue=2)
    batcher.submit([sources[0]], SearchOptions())
    batcher.submit([sources[1]], SearchOptions())
    with pytest.raises(QueueFull, match="2 requests are waiting"):
        batcher.submit([sources[2]], SearchOptions())
    batcher.draining = True
    with pytest.raises(ShuttingDown):
        batcher.submit([sources[2]], SearchOptions())


def test_close_decodes_what_was_taken_and_drops_what_was_cancelled(model_and_sources) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, max_wait_ms=0)
    kept = batcher.submit([sources[0]], SearchOptions())
    cancelled = batcher.submit([sources[1]], SearchOptions(method="beam"))
    assert cancelled.cancel()
    batcher.start()
    batcher.close(timeout=60)
    assert kept.result(timeout=0)[0][0].tokens == alone(model, sources[0], SearchOptions()).tokens
    with pytest.raises(CancelledError):
        cancelled.result(timeout=0)
    assert batcher.stats.requests == 1
    with pytest.raises(ShuttingDown):
        batcher.submit([sources[0]], SearchOptions())


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on(model_and_sources) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, max_wait_ms=0)
    batcher.start()
    try:
        bad = batcher.submit([[10**6]], SearchOptions())  # an id outside the embedding
        with pytest.raises(IndexError):
            bad.result(timeout=30)
        good = batcher.submit([sources[0]], SearchOptions())
        assert good.result(timeout=30)[0][0].tokens
    finally:
        batcher.close()


def test_a_request_that_cannot_be_encoded_fails_alone(model_and_sources) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, max_wait_ms=0)
    good = batcher.submit([sources[0]], SearchOptions())
    bad = batcher.submit([[10**6]], SearchOptions())  # an id outside the embedding
    also_good = batcher.submit([sources[1]], SearchOptions())
    batcher.start()
    try:
        with pytest.raises(IndexError):
            bad.result(timeout=30)
        expected = alone(model, sources[0], SearchOptions()).tokens
        assert good.result(timeout=30)[0][0].tokens == expected
        assert also_good.result(timeout=30)[0][0].tokens
    finally:
        batcher.close()


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "static"])
def test_empty_sources_get_empty_answers(model_and_sources, continuous) -> None:
    model, sources = model_and_sources
    batcher = DynamicBatcher(model, continuous=continuous)
    ((empty, real), (nothing,)) = run_together(
        batcher, [([[], sources[0]], SearchOptions()), ([[]], SearchOptions())])
    assert empty.tokens == [] and real.tokens and nothing.tokens == []


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_queue": 0},
                                    {"max_wait_ms": -1.0}, {"max_wait_ms": float("nan")},
                                    {"threads": 0}])
def test_bad_settings_are_refused(model_and_sources, kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DynamicBatcher(model_and_sources[0], **kwargs)


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_a_request_given_up_mid_batch_frees_its_rows_and_the_others_go_on(
    model_and_sources, arch, qa_run_dir, tmp_path
) -> None:
    model, sources = model_and_sources
    if arch == "transformer":
        model = transformer_run_model(qa_run_dir, tmp_path)
    options = SearchOptions(max_length=10, min_length=6)
    gated = GatedModel(model)
    batcher = DynamicBatcher(gated, max_wait_ms=0)
    assert batcher.continuous == {"greedy", "sample"}  # both architectures' states join
    futures = [batcher.submit([s], options) for s in sources[:3]]
    batcher.start()
    try:
        assert gated.entered.wait(60)  # the three decode together, held at their first step
        batcher.cancel(futures[1])
        gated.release.set()
        answers = [futures[0].result(timeout=60), futures[2].result(timeout=60)]
        with pytest.raises(CancelledError):
            futures[1].result(timeout=60)
    finally:
        batcher.close()
    assert batcher.stats.cancelled == 1 and batcher.stats.requests == 2
    for source, ((hyp,),) in zip([sources[0], sources[2]], answers, strict=True):
        assert hyp.tokens == alone(model, source, options).tokens


def transformer_run_model(qa_run_dir: Path, tmp_path: Path) -> torch.nn.Module:
    """A tiny Transformer trained one step on the run's data (for the batcher's tests)."""
    from padless.cli import main
    from tests.helpers import AS_TRANSFORMER, TINY_RUN

    run = tmp_path / "transformer"
    data = str(RunDirectory(qa_run_dir).path.parent)
    info = read_run_info(RunDirectory(qa_run_dir))
    assert (
        main(
            [
                "train",
                "--data",
                info.data_dir or data,
                "--out",
                str(run),
                "--max-steps",
                "1",
                *(f"--set={kv}" for kv in [*TINY_RUN, *AS_TRANSFORMER]),
            ]
        )
        == 0
    )
    model, _, _ = load_model(run, device="cpu")
    return model
