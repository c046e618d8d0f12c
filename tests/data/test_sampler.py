"""BucketBatchSampler: coverage, limits, determinism, resumption, sharding, padding."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from padless.data.loader import make_batches
from padless.data.readers import ReadStats, read_chitchat
from padless.data.sampler import BucketBatchSampler, padding_fraction, random_batches
from padless.data.text import normalize_default


def _lengths(n: int = 203, seed: int = 0) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    return [rng.randint(1, 30) for _ in range(n)], [rng.randint(0, 40) for _ in range(n)]


def _epoch(sampler: BucketBatchSampler) -> list[list[int]]:
    return [list(b) for b in sampler]


def test_every_index_once_per_epoch_and_batch_size_respected() -> None:
    src, tgt = _lengths()
    sampler = BucketBatchSampler(src, tgt, batch_size=16, seed=3)
    batches = _epoch(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(src)))
    assert all(1 <= len(b) <= 16 for b in batches)
    assert len(batches) == len(sampler) == 13


def test_max_tokens_budget_holds_except_for_a_lone_oversized_pair() -> None:
    src, tgt = _lengths()
    src[5] = 500  # one pair above the whole budget: alone in its batch, not dropped
    sampler = BucketBatchSampler(src, tgt, max_tokens=200, seed=1)
    batches = _epoch(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(src)))
    for b in batches:
        cells = len(b) * max(max(src[i], tgt[i] + 1) for i in b)
        assert cells <= 200 or b == [5]


def test_same_seed_same_batches_new_epoch_new_order() -> None:
    src, tgt = _lengths()
    a = BucketBatchSampler(src, tgt, batch_size=8, seed=7)
    b = BucketBatchSampler(src, tgt, batch_size=8, seed=7)
    first_a, first_b = _epoch(a), _epoch(b)
    assert first_a == first_b
    second_a = _epoch(a)  # iterating to the end moved to epoch 1
    assert second_a != first_a
    b.set_epoch(1)
    assert _epoch(b) == second_a
    assert _epoch(BucketBatchSampler(src, tgt, batch_size=8, seed=8)) != first_a


def test_without_shuffle_batches_follow_sorted_lengths() -> None:
    src, tgt = _lengths()
    batches = _epoch(BucketBatchSampler(src, tgt, batch_size=10, shuffle=False))
    flat = [i for b in batches for i in b]
    assert [tgt[i] for i in flat] == sorted(tgt)


def test_resume_mid_epoch_from_state_dict() -> None:
    src, tgt = _lengths()
    full = BucketBatchSampler(src, tgt, batch_size=8, seed=2)
    full.set_epoch(4)
    expected = _epoch(full) + _epoch(full)

    run = BucketBatchSampler(src, tgt, batch_size=8, seed=2)
    run.set_epoch(4)
    seen = []
    for i, batch in enumerate(run):
        seen.append(batch)
        if i == 9:
            state = run.state_dict()
            break
    assert all(v is None or isinstance(v, int) for v in state.values())  # plain data
    resumed = BucketBatchSampler(src, tgt, batch_size=8, seed=2)
    resumed.load_state_dict(state)
    seen += _epoch(resumed) + _epoch(resumed)
    assert seen == expected


def test_state_for_another_split_is_refused() -> None:
    src, tgt = _lengths()
    state = BucketBatchSampler(src, tgt, batch_size=8).state_dict()
    with pytest.raises(ValueError, match="pairs"):
        BucketBatchSampler(src[:-1], tgt[:-1], batch_size=8).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        BucketBatchSampler(src, tgt, batch_size=8, seed=1).load_state_dict(state)


@pytest.mark.parametrize("num_shards", [2, 3])
@pytest.mark.parametrize("limits", [{"batch_size": 10}, {"max_tokens": 120}])
def test_shards_split_each_global_batch(num_shards: int, limits: dict) -> None:
    src, tgt = _lengths(101)
    src[0] = 400  # forms a batch of one: merged so that no shard goes empty
    single = BucketBatchSampler(
        src, tgt, seed=5, min_global_batch=num_shards, **limits
    )
    shards = [
        BucketBatchSampler(src, tgt, seed=5, num_shards=num_shards, shard_index=k, **limits)
        for k in range(num_shards)
    ]
    for _ in range(2):  # two epochs
        global_batches = _epoch(single)
        per_shard = [_epoch(s) for s in shards]
        assert all(len(p) == len(global_batches) for p in per_shard)
        for step, batch in enumerate(global_batches):
            parts = [p[step] for p in per_shard]
            assert all(parts)  # no shard ever gets an empty batch
            assert [batch[k::num_shards] for k in range(num_shards)] == parts


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="batch_size, max_tokens"):
        BucketBatchSampler([1], [1])
    with pytest.raises(ValueError, match="shard_index"):
        BucketBatchSampler([1, 2], [1, 2], batch_size=1, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="lengths"):
        BucketBatchSampler([1, 2], [1], batch_size=1)
    with pytest.raises(ValueError, match="cannot fill"):
        BucketBatchSampler([1], [1], batch_size=1, num_shards=2)


def test_make_batches_builds_batches_with_bos_and_eos() -> None:
    pairs = [([4, 5, 6], [7]), ([4], [5, 6]), ([8, 9], [9, 8, 7])]
    sampler = BucketBatchSampler([3, 1, 2], [1, 2, 3], batch_size=2, shuffle=False)
    batches = list(make_batches(pairs, sampler))
    assert [len(b) for b in batches] == [2, 1]
    assert sum(b.n_tokens for b in batches) == 6 + 3  # target tokens + one EOS each
    assert batches[0].tgt_in[0].tolist() == [1, 1]


def test_padding_fraction_counts_padded_cells() -> None:
    assert padding_fraction([[0, 1]], [1, 3]) == pytest.approx(1 / 3)
    assert padding_fraction([[0, 1]], [1, 3], extra=1) == pytest.approx(2 / 8)
    assert sorted(i for b in random_batches(10, 3) for i in b) == list(range(10))


def test_bucketing_cuts_chitchat_target_padding_to_under_a_third_of_random() -> None:
    # The real bundled corpus, tokenised as `padless prepare chitchat` does by default.
    src, tgt = [], []
    for source, target in read_chitchat(None, ReadStats()):
        src.append(len(normalize_default(source).split()))
        tgt.append(len(normalize_default(target).split()))
    assert len(src) > 130_000
    sampler = BucketBatchSampler(src, tgt, batch_size=64, seed=0)
    bucketed = sampler.padding_fraction("target")
    baseline = padding_fraction(random_batches(len(tgt), 64, seed=0), tgt, extra=1)
    assert baseline > 0.5  # chat turns vary a lot in length
    assert bucketed <= baseline / 3
    sampler.set_epoch(1)
    assert sampler.padding_fraction("target") <= baseline / 3


@settings(max_examples=60)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 50), st.integers(0, 50)), min_size=3, max_size=80),
    batch_size=st.one_of(st.none(), st.integers(1, 12)),
    max_tokens=st.integers(20, 300),
    num_shards=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_sampler_invariants(lengths, batch_size, max_tokens, num_shards, seed) -> None:
    src, tgt = [s for s, _ in lengths], [t for _, t in lengths]
    limits = {"batch_size": batch_size, "max_tokens": max_tokens}
    single = BucketBatchSampler(src, tgt, seed=seed, min_global_batch=num_shards, **limits)
    shards = [BucketBatchSampler(src, tgt, seed=seed, num_shards=num_shards, shard_index=k,
                                 **limits) for k in range(num_shards)]
    global_batches = _epoch(single)
    assert sorted(i for b in global_batches for i in b) == list(range(len(src)))
    per_shard = [_epoch(s) for s in shards]
    for step, batch in enumerate(global_batches):
        parts = [p[step] for p in per_shard]
        assert all(parts) and sorted(i for p in parts for i in p) == sorted(batch)
