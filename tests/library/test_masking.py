"""pad_batch and lengths_to_mask: the seed's zeroPadding/binaryMatrix, done right."""

import itertools

import pytest
import torch

from padless import lengths_to_mask, pad_batch


def test_seed_targets_are_padded_like_zero_padding():
    targets = [[1, 2], [1, 2, 3], [1]]
    padded, lengths = pad_batch(targets)
    assert padded.tolist() == [[1, 1, 1], [2, 2, 0], [0, 3, 0]]
    # the seed's zeroPadding is itertools.zip_longest
    assert padded.tolist() == [list(r) for r in itertools.zip_longest(*targets, fillvalue=0)]
    assert lengths.tolist() == [2, 3, 1]
    assert padded.dtype == torch.long and lengths.device.type == "cpu"


def test_seed_mask_matches_binary_matrix():
    padded, lengths = pad_batch([[1, 2], [1, 2, 3], [1]])
    mask = lengths_to_mask(lengths)
    assert mask.dtype == torch.bool
    assert mask.int().tolist() == [[1, 1, 1], [1, 1, 0], [0, 1, 0]]


def test_mask_from_lengths_keeps_real_tokens_equal_to_pad_id():
    padded, lengths = pad_batch([[5, 0, 7], [0]])  # a real token whose id is 0
    assert lengths_to_mask(lengths).t().tolist() == [[True, True, True], [True, False, False]]


def test_batch_first_and_tensor_inputs():
    seqs = [torch.tensor([4, 5, 6]), torch.tensor([7])]
    padded, lengths = pad_batch(seqs, pad_id=9, batch_first=True)
    assert padded.tolist() == [[4, 5, 6], [7, 9, 9]]
    mask = lengths_to_mask(lengths, max_len=4, batch_first=True)
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert torch.equal(lengths_to_mask(lengths, batch_first=False), mask[:, :3].t())


def test_empty_sequences_and_zero_lengths():
    padded, lengths = pad_batch([[], [3]])
    assert padded.tolist() == [[0, 3]] and lengths.tolist() == [0, 1]
    assert lengths_to_mask(torch.tensor([0, 0])).shape == (0, 2)


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        pad_batch([])


def test_bad_sequences_are_errors():
    with pytest.raises(ValueError, match="1-D"):
        pad_batch([torch.zeros(2, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="integers"):
        pad_batch([torch.tensor([1.5])])


def test_negative_length_is_an_error():
    with pytest.raises(ValueError, match="negative length -1"):
        lengths_to_mask(torch.tensor([2, -1]))


def test_length_above_max_len_is_an_error():
    with pytest.raises(ValueError, match="length 5 is above max_len=3"):
        lengths_to_mask(torch.tensor([5, 1]), max_len=3)


def test_lengths_must_be_integer_vector():
    with pytest.raises(ValueError, match="1-D"):
        lengths_to_mask(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        lengths_to_mask(torch.tensor([1.0]))


def test_float_ids_are_refused_not_truncated():
    for seqs in ([[1.5, 2.0]], [[1, 2.0]], [[3], [0.5]]):
        with pytest.raises(ValueError, match="integers"):
            pad_batch(seqs)
    with pytest.raises(ValueError, match="sequence 0 is not a list of token ids"):
        pad_batch([["a", "b"]])


def test_an_empty_batch_of_lengths_gives_an_empty_mask():
    assert lengths_to_mask([]).shape == (0, 0)
    assert lengths_to_mask([], max_len=3).shape == (3, 0)
    assert lengths_to_mask([], batch_first=True).dtype == torch.bool


def test_max_len_must_be_a_non_negative_int():
    for bad in (2.5, 3.0, True, torch.tensor(3.0), "3"):
        with pytest.raises(ValueError, match="max_len must be an int"):
            lengths_to_mask([1, 2], max_len=bad)
    with pytest.raises(ValueError, match="max_len must be >= 0"):
        lengths_to_mask([], max_len=-1)
    # integer types of every kind are fine
    assert lengths_to_mask([1, 2], max_len=torch.tensor(4)).shape == (4, 2)
    assert lengths_to_mask([1, 2], max_len=torch.tensor([3])[0]).shape == (3, 2)
