"""Masked losses against brute-force float64 references, gradients and properties."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from padless import (
    REDUCTIONS,
    LossOutput,
    lengths_to_mask,
    masked_cross_entropy,
    masked_nll_loss,
    pad_batch,
)

SEED_TARGETS = [[1, 2], [1, 2, 3], [1]]
SEED_OUTPUTS1 = [[0.2, 0.1, 0.7], [0.3, 0.6, 0.1], [0.4, 0.5, 0.1]]


def seed_mask_nll_loss(inp, target, mask):
    """The seed document's maskNLLLoss, verbatim in spirit: probabilities in, log after."""
    n_total = mask.sum()
    cross_entropy = -torch.log(torch.gather(inp, 1, target.view(-1, 1)))
    loss = cross_entropy.masked_select(mask.view(-1, 1).bool()).mean()
    return loss, n_total.item()


def reference(scores, target, mask, reduction, batch_first=False, *, eps=0.0, gamma=0.0,
              nll=False):
    """Brute-force float64 loss with Python loops over positions."""
    x, y, m = scores.double(), target, mask.bool()
    if y.dim() == 1:
        x, y, m = x[None], y[None], m[None]
    elif batch_first:
        x, y, m = x.transpose(0, 1), y.t(), m.t()
    steps, batch = y.shape
    per = torch.zeros(steps, batch, dtype=torch.float64)
    for t in range(steps):
        for b in range(batch):
            if not m[t, b]:
                continue
            row = x[t, b]
            if nll:
                per[t, b] = -row[y[t, b]]
                continue
            logp = row - (row.max() + torch.log(torch.exp(row - row.max()).sum()))
            loss = -logp[y[t, b]]
            if eps:
                loss = (1 - eps) * loss - eps * logp.mean()
            if gamma:
                loss = (1 - torch.exp(logp[y[t, b]])) ** gamma * loss
            per[t, b] = loss
    n = int(m.sum())
    if reduction == "sum":
        return per.sum()
    if reduction == "mean":
        return per.sum() / max(n, 1)
    zero = torch.zeros((), dtype=torch.float64)
    if reduction == "timestep":
        return sum((per[t][m[t]].mean() for t in range(steps) if m[t].any()), zero)
    if reduction == "sequence":
        means = [per[:, b][m[:, b]].mean() for b in range(batch) if m[:, b].any()]
        return sum(means, zero) / max(len(means), 1)
    out = per if not batch_first or target.dim() == 1 else per.t()
    return out.reshape(target.shape)


def random_batch(lengths, vocab, batch_first=False, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, vocab, (n,), generator=g) for n in lengths]
    target, lens = pad_batch(seqs, pad_id=0, batch_first=batch_first)
    mask = lengths_to_mask(lens, batch_first=batch_first)
    logits = torch.randn(*target.shape, vocab, generator=g, dtype=torch.float64).to(dtype)
    return logits, target, mask


# --- the seed's worked example ---------------------------------------------------------

def test_seed_example_reproduced():
    target, lengths = pad_batch(SEED_TARGETS)
    mask = lengths_to_mask(lengths)
    out = masked_nll_loss(torch.tensor(SEED_OUTPUTS1).log(), target[0], mask[0])
    assert isinstance(out, LossOutput)
    loss, n = out
    assert n == 3
    assert loss.item() == pytest.approx(1.1689, abs=1e-4)
    assert loss.item() == pytest.approx(seed_mask_nll_loss(
        torch.tensor(SEED_OUTPUTS1), target[0], mask[0])[0].item(), abs=1e-6)


def test_timestep_equals_a_loop_of_the_seeds_mask_nll_loss():
    logits, target, mask = random_batch([4, 2, 5, 1], vocab=7)
    probs = logits.softmax(-1)
    expected = sum(seed_mask_nll_loss(probs[t], target[t], mask[t])[0]
                   for t in range(target.shape[0]))
    loss, n = masked_nll_loss(logits.log_softmax(-1), target, mask, reduction="timestep")
    assert n == 12
    torch.testing.assert_close(loss, expected)
    loss_ce, _ = masked_cross_entropy(logits, target, mask, reduction="timestep")
    torch.testing.assert_close(loss_ce, expected)


# --- every reduction against the brute-force reference ---------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_cross_entropy_matches_reference(reduction, batch_first):
    logits, target, mask = random_batch([3, 5, 1, 4], vocab=6, batch_first=batch_first)
    loss, n = masked_cross_entropy(logits, target, mask, reduction=reduction,
                                   batch_first=batch_first)
    torch.testing.assert_close(loss, reference(logits, target, mask, reduction, batch_first))
    assert n == 13


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_matches_reference(reduction):
    logits, target, mask = random_batch([2, 6, 3], vocab=5, seed=3)
    log_probs = logits.log_softmax(-1)
    loss, _ = masked_nll_loss(log_probs, target, mask, reduction=reduction)
    torch.testing.assert_close(loss, reference(log_probs, target, mask, reduction, nll=True))


@pytest.mark.parametrize("reduction", ["mean", "sequence", "timestep"])
def test_label_smoothing_and_focal_match_reference(reduction):
    logits, target, mask = random_batch([3, 1, 4], vocab=5, seed=5)
    for eps, gamma in [(0.1, 0.0), (0.0, 2.0), (0.2, 1.5)]:
        loss, _ = masked_cross_entropy(logits, target, mask, reduction=reduction,
                                       label_smoothing=eps, focal_gamma=gamma)
        torch.testing.assert_close(
            loss, reference(logits, target, mask, reduction, eps=eps, gamma=gamma))


def test_label_smoothing_follows_torch_convention():
    logits, target, mask = random_batch([4, 4, 4], vocab=9, seed=2)
    ours, _ = masked_cross_entropy(logits, target, mask, label_smoothing=0.3)
    theirs = F.cross_entropy(logits.reshape(-1, 9), target.reshape(-1), label_smoothing=0.3)
    torch.testing.assert_close(ours, theirs)


def test_one_step_layout():
    logits, target, mask = random_batch([1, 0, 1], vocab=4)
    loss, n = masked_cross_entropy(logits[0], target[0], mask[0], reduction="timestep")
    assert n == 2
    torch.testing.assert_close(loss, reference(logits[0], target[0], mask[0], "timestep"))


def test_mask_dtypes_and_pad_id_agree():
    logits, target, mask = random_batch([2, 3], vocab=5, seed=1)
    target[mask & (target == 0)] = 1  # pad_id=0 must mark exactly the padding
    expected, _ = masked_cross_entropy(logits, target, mask)
    for m in (mask.to(torch.uint8), mask.int(), mask.long()):
        torch.testing.assert_close(masked_cross_entropy(logits, target, m)[0], expected)
    torch.testing.assert_close(masked_cross_entropy(logits, target, pad_id=0)[0], expected)


# --- gradients -----------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(reduction):
    logits, target, mask = random_batch([3, 1, 2], vocab=4, seed=7)
    logits.requires_grad_(True)

    def f(x):
        loss = masked_cross_entropy(x, target, mask, reduction=reduction,
                                    label_smoothing=0.1, focal_gamma=1.0).loss
        return loss

    assert torch.autograd.gradcheck(f, (logits,))


def test_gradient_matches_reference_autograd():
    logits, target, mask = random_batch([5, 2, 3], vocab=6, seed=11)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    masked_cross_entropy(a, target, mask, reduction="sequence").loss.backward()
    reference(b, target, mask, "sequence").backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_none_reduction_with_upstream_gradient():
    logits, target, mask = random_batch([4, 2], vocab=5, seed=4)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    upstream = torch.randn(target.shape, dtype=torch.float64)
    out, _ = masked_cross_entropy(a, target, mask, reduction="none")
    assert torch.all(out[~mask] == 0)
    (out * upstream).sum().backward()
    (reference(b, target, mask, "none") * upstream).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.all(a.grad[~mask] == 0)


# --- properties ----------------------------------------------------------------------

batches = st.fixed_dictionaries({
    "lengths": st.lists(st.integers(0, 6), min_size=1, max_size=5),
    "vocab": st.integers(2, 8),
    "batch_first": st.booleans(),
    "reduction": st.sampled_from(REDUCTIONS),
    "extra_steps": st.integers(0, 3),
    "extra_seqs": st.integers(0, 2),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=60, deadline=None)
@given(batches)
def test_padding_and_garbage_at_pads_change_nothing(p):
    """Extra pad steps, extra all-pad sequences, NaN logits and -100 ids at pads are inert."""
    bf, red = p["batch_first"], p["reduction"]
    logits, target, mask = random_batch(p["lengths"], p["vocab"], bf, seed=p["seed"])
    x = logits.clone().requires_grad_(True)
    loss, n = masked_cross_entropy(x, target, mask, reduction=red, batch_first=bf)
    grad_x, = torch.autograd.grad(loss.sum(), x, allow_unused=False)

    steps, batch = (target.shape[1], target.shape[0]) if bf else target.shape
    steps2, batch2 = steps + p["extra_steps"], batch + p["extra_seqs"]
    shape2 = (batch2, steps2) if bf else (steps2, batch2)
    big_logits = torch.full((*shape2, p["vocab"]), float("nan"), dtype=torch.float64)
    big_target = torch.full(shape2, -100, dtype=torch.long)
    big_mask = torch.zeros(shape2, dtype=torch.bool)
    region = (slice(0, batch), slice(0, steps)) if bf else (slice(0, steps), slice(0, batch))
    big_logits[region] = torch.where(mask[..., None], logits, float("nan"))
    big_target[region] = torch.where(mask, target, -100)
    big_mask[region] = mask
    y = big_logits.clone().requires_grad_(True)
    loss2, n2 = masked_cross_entropy(y, big_target, big_mask, reduction=red, batch_first=bf)
    grad_y, = torch.autograd.grad(loss2.sum(), y)

    assert n2 == n == sum(p["lengths"])
    assert not torch.isnan(loss2).any()
    if red == "none":
        torch.testing.assert_close(loss2[region], loss)
        assert torch.all(loss2[~big_mask] == 0)
    else:
        torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(grad_y[region], torch.where(mask[..., None], grad_x, 0.0))
    assert torch.all(grad_y[~big_mask] == 0)


@settings(max_examples=40, deadline=None)
@given(batches)
def test_time_major_equals_batch_major(p):
    logits, target, mask = random_batch(p["lengths"], p["vocab"], False, seed=p["seed"])
    red = p["reduction"]
    tm, _ = masked_cross_entropy(logits, target, mask, reduction=red)
    bm, _ = masked_cross_entropy(logits.transpose(0, 1), target.t(), mask.t(),
                                 reduction=red, batch_first=True)
    torch.testing.assert_close(tm, bm.t() if red == "none" else bm)


@settings(max_examples=30, deadline=None)
@given(batches, st.sampled_from([torch.bfloat16, torch.float16]))
def test_half_precision_is_computed_in_float32(p, dtype):
    logits, target, mask = random_batch(p["lengths"], p["vocab"], seed=p["seed"])
    red = p["reduction"]
    low = logits.to(dtype)
    loss, _ = masked_cross_entropy(low, target, mask, reduction=red)
    assert loss.dtype == torch.float32
    # exactly the float32 loss of the rounded logits, and close to the float64 one
    torch.testing.assert_close(
        loss, masked_cross_entropy(low.float(), target, mask, reduction=red)[0])
    torch.testing.assert_close(loss.double(), reference(logits, target, mask, red),
                               atol=0.05 * max(1, sum(p["lengths"])), rtol=0.02)


def test_large_logits_are_stable():
    """log(softmax) would give -inf here; log_softmax does not."""
    logits = torch.tensor([[[1000.0, 0.0, -1000.0]]])
    loss, _ = masked_cross_entropy(logits, torch.tensor([[2]]), torch.tensor([[True]]))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(2000.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_pad_batch_is_a_differentiable_zero(reduction):
    logits = torch.full((3, 2, 5), float("nan"), requires_grad=True)
    target = torch.full((3, 2), -100)
    loss, n = masked_cross_entropy(logits, target, torch.zeros(3, 2, dtype=torch.bool),
                                   reduction=reduction)
    assert n == 0 and torch.all(loss == 0)
    loss.sum().backward()
    assert torch.all(logits.grad == 0)


# --- bad input -----------------------------------------------------------------------

def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2, 5\).*\(3, 4\)"):
        masked_cross_entropy(torch.zeros(3, 2, 5), torch.zeros(3, 4, dtype=torch.long),
                             pad_id=0)


def test_transposed_layout_gets_a_hint():
    with pytest.raises(ValueError, match="transposed"):
        masked_cross_entropy(torch.zeros(2, 3, 5), torch.zeros(3, 2, dtype=torch.long),
                             pad_id=0)


def test_class_dimension_second_gets_a_hint():
    with pytest.raises(ValueError, match="class dimension must be last"):
        masked_cross_entropy(torch.zeros(4, 5, 7), torch.zeros(4, 7, dtype=torch.long),
                             pad_id=0)


def test_mask_shape_mismatch():
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3\)"):
        masked_cross_entropy(torch.zeros(3, 2, 5), torch.zeros(3, 2, dtype=torch.long),
                             torch.ones(2, 3, dtype=torch.bool))


def test_target_out_of_range_at_real_position():
    target = torch.tensor([[1, 7], [2, 0]])
    with pytest.raises(ValueError, match=r"target id 7 at real position \(0, 1\).*\[0, 5\)"):
        masked_cross_entropy(torch.zeros(2, 2, 5), target, pad_id=0)
    with pytest.raises(ValueError, match="target id -3"):
        masked_cross_entropy(torch.zeros(2, 2, 5), torch.tensor([[1, -3], [2, 0]]), pad_id=0)


def test_unknown_reduction_lists_valid_ones():
    with pytest.raises(ValueError, match="mean, sum, sequence, timestep, none"):
        masked_cross_entropy(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), pad_id=0,
                             reduction="avg")


def test_mask_or_pad_id_required():
    with pytest.raises(ValueError, match="mask .* or pad_id"):
        masked_cross_entropy(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))


def test_wrong_types():
    with pytest.raises(TypeError, match="integer token ids"):
        masked_cross_entropy(torch.zeros(2, 5), torch.zeros(2), pad_id=0)
    with pytest.raises(TypeError, match="floating-point"):
        masked_cross_entropy(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2).long(),
                             pad_id=0)
    with pytest.raises(TypeError, match="mask must be bool"):
        masked_cross_entropy(torch.zeros(2, 5), torch.zeros(2).long(), torch.ones(2))


def test_sequence_reduction_needs_two_dims():
    with pytest.raises(ValueError, match="sequence"):
        masked_cross_entropy(torch.zeros(2, 2, 2, 5), torch.zeros(2, 2, 2).long(), pad_id=9,
                             reduction="sequence")


def test_bad_options():
    x, y = torch.zeros(2, 5), torch.ones(2).long()
    for smoothing in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="label_smoothing"):
            masked_cross_entropy(x, y, pad_id=0, label_smoothing=smoothing)
    for gamma in (-1, float("nan"), float("inf")):  # NaN used to be ignored silently
        with pytest.raises(ValueError, match="focal_gamma"):
            masked_cross_entropy(x, y, pad_id=0, focal_gamma=gamma)


def test_nll_refuses_probabilities_given_for_log_probabilities():
    logits = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 6, (4, 3), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[3, 1] = False
    with pytest.raises(ValueError, match="never above 0.*log_softmax"):
        masked_nll_loss(logits.softmax(-1), target, mask)  # would be a negative "loss"
    log_probs = logits.log_softmax(-1)
    loss = masked_nll_loss(log_probs, target, mask).loss
    assert loss.item() > 0
    log_probs[3, 1] = 5.0  # anything at a pad is never read, positive or not
    assert masked_nll_loss(log_probs, target, mask).loss.item() == loss.item()
    # A log-probability of exactly 0 (certainty) and rounding below the tolerance are fine.
    certain = torch.full((2, 3), -30.0)
    certain[:, 0] = 1e-6
    assert masked_nll_loss(certain, torch.zeros(2).long(), pad_id=-1).loss.item() < 0


def test_docs_worked_example_token_weights():
    """docs/losses.md: with lengths 2, 5, 10 the tutorial objective weighs the last step 3x."""
    target, lengths = pad_batch([[1] * n for n in (2, 5, 10)])
    mask = lengths_to_mask(lengths)
    weights = {}
    for reduction in ("mean", "sequence", "timestep"):
        log_probs = torch.zeros(*target.shape, 2, requires_grad=True)
        masked_nll_loss(log_probs, target, mask, reduction=reduction).loss.backward()
        weights[reduction] = -log_probs.grad[..., 1]
    torch.testing.assert_close(weights["mean"][mask], torch.full((17,), 1 / 17))
    assert weights["timestep"][9, 2].item() == pytest.approx(3 * weights["timestep"][0, 2].item())
    assert weights["timestep"].sum().item() == pytest.approx(10)
    assert weights["sequence"][0, 0].item() == pytest.approx(1 / 6)
