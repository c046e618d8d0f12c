"""masked_linear_cross_entropy: exact against the unfused loss, chunked, memory-bounded."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from padless import (
    REDUCTIONS,
    lengths_to_mask,
    masked_cross_entropy,
    masked_linear_cross_entropy,
    pad_batch,
)

LENGTHS = [5, 2, 7, 0, 3]  # N = 17 real tokens of T x B = 7 x 5, one empty sequence
VOCAB, HIDDEN = 13, 6


def random_problem(lengths=LENGTHS, vocab=VOCAB, hidden=HIDDEN, *, batch_first=False, bias=True,
               dtype=torch.float64, seed=0):
    """Random ``hidden [T, B, H]``, ``weight [V, H]``, ``bias [V]``, ``target``, ``mask``.

    Pad positions of ``target`` hold ``-100`` and of ``hidden`` hold NaN: neither may be read.
    """
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, vocab, (n,), generator=g) for n in lengths]
    target, lens = pad_batch(seqs, pad_id=-100, batch_first=batch_first)
    mask = lengths_to_mask(lens, batch_first=batch_first)
    h = torch.randn(*target.shape, hidden, generator=g, dtype=torch.float64)
    h[~mask] = float("nan")
    w = torch.randn(vocab, hidden, generator=g, dtype=torch.float64)
    b = torch.randn(vocab, generator=g, dtype=torch.float64) if bias else None
    leaves = [t.to(dtype).requires_grad_() if t is not None else None for t in (h, w, b)]
    return (*leaves, target, mask)


def unfused(h, w, b, target, mask, **kw):
    """The reference: full projection, then the (already tested) masked_cross_entropy."""
    kw.pop("chunk_size", None)
    return masked_cross_entropy(F.linear(torch.nan_to_num(h), w, b), target, mask, **kw)


def loss_and_grads(fn, h, w, b, target, mask, **kw):
    """Loss, token count, and the gradients of h, w (and b) for a random upstream gradient
    (per position for ``reduction="none"``)."""
    loss, n = fn(h, w, b, target, mask, **kw)
    upstream = torch.randn(loss.shape, generator=torch.Generator().manual_seed(1),
                           dtype=loss.dtype)
    inputs = [t for t in (h, w, b) if t is not None]
    grads = torch.autograd.grad(loss, inputs, upstream)
    return loss, n, grads


def fused(h, w, b, target, mask, **kw):
    return masked_linear_cross_entropy(h, w, target, mask, bias=b, **kw)


def assert_matches_unfused(h, w, b, target, mask, **kw):
    loss, n, grads = loss_and_grads(fused, h, w, b, target, mask, **kw)
    ref_loss, ref_n, ref_grads = loss_and_grads(unfused, h, w, b, target, mask, **kw)
    assert n == ref_n
    assert loss.dtype == ref_loss.dtype and loss.shape == ref_loss.shape
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(got).all()
        # Includes the exact zeros at the NaN pad positions of hidden.
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# --- exactness ------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 3, 100, None])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_unfused_loss_and_gradients(reduction, chunk_size, bias):
    """Loss and the gradients of hidden, weight, bias, with a random upstream gradient
    (per position for "none")."""
    h, w, b, target, mask = random_problem(bias=bias)
    assert_matches_unfused(h, w, b, target, mask, reduction=reduction, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [1, 4, None])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_label_smoothing_matches_unfused(reduction, chunk_size):
    h, w, b, target, mask = random_problem(seed=2)
    assert_matches_unfused(h, w, b, target, mask, reduction=reduction, chunk_size=chunk_size,
                           label_smoothing=0.15)


@pytest.mark.parametrize("reduction", ["sequence", "timestep", "none", "mean"])
def test_batch_first_matches_unfused_and_time_major(reduction):
    h, w, b, target, mask = random_problem(batch_first=True, seed=3)
    assert_matches_unfused(h, w, b, target, mask, reduction=reduction, chunk_size=2,
                           batch_first=True)
    time_major = fused(h.transpose(0, 1), w, b, target.t(), mask.t(), reduction=reduction,
                       chunk_size=2)
    batch_major = fused(h, w, b, target, mask, reduction=reduction, chunk_size=2,
                        batch_first=True)
    want = time_major.loss.t() if reduction == "none" else time_major.loss
    torch.testing.assert_close(batch_major.loss, want)


def test_one_decoding_step_layout_and_pad_id():
    h, w, b, target, mask = random_problem(lengths=[1, 0, 1, 1], seed=4)
    step_h, step_target = h[0], target[0]  # [B, H], [B]
    assert_matches_unfused(step_h, w, b, step_target, step_target != -100, chunk_size=2)
    by_mask = fused(step_h, w, b, step_target, step_target != -100)
    by_pad_id = masked_linear_cross_entropy(step_h, w, step_target, bias=b, pad_id=-100)
    assert by_pad_id.n_tokens == 3
    torch.testing.assert_close(by_pad_id.loss, by_mask.loss)


def test_only_some_inputs_need_gradients():
    h, w, b, target, mask = random_problem(seed=5)
    for reduction in ("mean", "none"):
        ref = unfused(h, w, b, target, mask, reduction=reduction).loss.sum()
        want_h, want_b = torch.autograd.grad(ref, [h, b])
        loss = fused(h, w.detach(), b, target, mask, reduction=reduction, chunk_size=3).loss
        got_h, got_b = torch.autograd.grad(loss.sum(), [h, b])
        torch.testing.assert_close(got_h, want_h)
        torch.testing.assert_close(got_b, want_b)


def test_no_grad_and_retain_graph_give_the_same_numbers():
    h, w, b, target, mask = random_problem(seed=6)
    with torch.no_grad():
        no_grad_loss = fused(h, w, b, target, mask, chunk_size=4).loss
    loss = fused(h, w, b, target, mask, chunk_size=4).loss
    torch.testing.assert_close(no_grad_loss, loss)
    first = torch.autograd.grad(loss, [h, w, b], retain_graph=True)
    second = torch.autograd.grad(loss, [h, w, b])
    for a, c in zip(first, second, strict=True):
        torch.testing.assert_close(a, c)


def test_float32_inputs_give_float32_loss_close_to_float64():
    h, w, b, target, mask = random_problem(dtype=torch.float32, seed=7)
    loss = fused(h, w, b, target, mask, chunk_size=5).loss
    ref = unfused(h.double(), w.double(), b.double(), target, mask).loss
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)


def test_huge_logits_stay_finite_and_exact():
    """Logits in the thousands: the target's probability underflows float32, the loss must not."""
    h, w, b, target, mask = random_problem(dtype=torch.float32, seed=11)
    big = (h.detach() * 300).requires_grad_()
    loss = fused(big, w, b, target, mask, reduction="none", chunk_size=4).loss
    ref = unfused(big.double(), w.double(), b.double(), target, mask, reduction="none").loss
    assert torch.isfinite(loss).all() and loss.max() > 100
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-3)


# --- padding -------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_pad_batch_is_a_differentiable_zero(reduction):
    h = torch.full((3, 2, 4), float("nan"), requires_grad=True)
    w = torch.randn(5, 4, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    target = torch.full((3, 2), -100)
    loss, n = masked_linear_cross_entropy(h, w, target, torch.zeros(3, 2, dtype=torch.bool),
                                          bias=b, reduction=reduction)
    assert n == 0 and torch.all(loss == 0)
    loss.sum().backward()
    for t in (h, w, b):
        assert torch.all(t.grad == 0)


def test_garbage_at_pads_changes_nothing_and_gets_zero_gradient():
    h, w, b, target, mask = random_problem(seed=8)
    clean = h.detach().nan_to_num(0.0).requires_grad_()
    for reduction in ("mean", "sequence", "none"):
        got = fused(h, w, b, target, mask, reduction=reduction, chunk_size=4).loss
        want = fused(clean, w, b, target, mask, reduction=reduction, chunk_size=4).loss
        torch.testing.assert_close(got, want)
        (grad,) = torch.autograd.grad(got.sum(), [h])
        assert torch.all(grad[~mask] == 0) and torch.isfinite(grad).all()


# --- mixed precision ------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bf16_hidden_under_cpu_autocast_is_close_to_float32(reduction):
    h, w, b, target, mask = random_problem(lengths=[9, 4, 12, 7], vocab=50, hidden=16,
                                       dtype=torch.float32, seed=9)
    ref, _, ref_grads = loss_and_grads(fused, h, w, b, target, mask, reduction=reduction)
    h16 = h.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, n, grads = loss_and_grads(fused, h16, w, b, target, mask, reduction=reduction,
                                        chunk_size=5)
    assert loss.dtype == torch.float32  # losses and their sums accumulate in float32
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.float32, torch.float32]
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)
    for got, want in zip(grads, ref_grads, strict=True):
        assert (got.float() - want).nan_to_num().abs().max() <= 3e-2 * want.abs().max()
    assert torch.all(grads[0][~mask] == 0)


# --- memory bound ---------------------------------------------------------------------


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


def big_batch():
    """N = 120 real tokens, V = 400, H = 8: N x V (48,000) dwarfs V x H (3,200)."""
    return random_problem(lengths=[30, 25, 20, 25, 20], vocab=400, hidden=8, dtype=torch.float32,
                      seed=10)


@pytest.mark.parametrize("reduction", ["mean", "none", "sequence"])
def test_largest_intermediate_is_one_chunk_of_logits(reduction):
    h, w, b, target, mask = big_batch()
    n, vocab, chunk = int(mask.sum()), w.shape[0], 7
    bound = max(chunk * vocab, w.numel(), h.numel())  # a chunk of logits, or parameter-sized
    assert bound * 4 < n * vocab

    with LargestTensor() as fused_run:
        loss = fused(h, w, b, target, mask, reduction=reduction, chunk_size=chunk).loss
        loss.sum().backward()
    assert fused_run.largest <= bound

    # The probe is not vacuous: the unfused loss does materialise all N x V logits.
    with LargestTensor() as unfused_run:
        unfused(h, w, b, target, mask, reduction=reduction).loss.sum().backward()
    assert unfused_run.largest >= n * vocab


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_nothing_logits_sized_is_saved_for_backward(reduction):
    h, w, b, target, mask = big_batch()
    n, vocab = int(mask.sum()), w.shape[0]
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fused(h, w, b, target, mask, reduction=reduction, chunk_size=7).loss
    assert saved and max(saved) < n * vocab
    loss.sum().backward()


def test_default_chunk_size_follows_the_memory_budget():
    from padless._chunked_ce import LOGITS_BUDGET_BYTES, default_chunk_size

    assert default_chunk_size(32_000, torch.float32) == LOGITS_BUDGET_BYTES // (32_000 * 4)
    assert default_chunk_size(32_000, torch.float64) == LOGITS_BUDGET_BYTES // (32_000 * 8)
    assert default_chunk_size(10**9, torch.float32) == 1


# --- bad input ------------------------------------------------------------------------


def test_bad_inputs_raise_the_promised_errors():
    h, w, b, target, mask = random_problem(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"weight of shape \(13, 5\).*\[V, H\]"):
        masked_linear_cross_entropy(h, w[:, :5], target, mask)
    with pytest.raises(ValueError, match=r"bias of shape \(12,\).*\[V\]"):
        masked_linear_cross_entropy(h, w, target, mask, bias=b[:12])
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            masked_linear_cross_entropy(h, w, target, mask, chunk_size=bad)
    with pytest.raises(ValueError, match=r"\(7, 5, 13\).*\(5, 7\).*transposed"):
        masked_linear_cross_entropy(h, w, target.t(), mask.t())
    with pytest.raises(ValueError, match="mean, sum, sequence, timestep, none"):
        masked_linear_cross_entropy(h, w, target, mask, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        masked_linear_cross_entropy(h, w, target, mask, label_smoothing=-0.1)
    with pytest.raises(TypeError, match="hidden must be a floating-point"):
        masked_linear_cross_entropy(h.long(), w, target, mask)
    with pytest.raises(TypeError, match="weight must be a floating-point"):
        masked_linear_cross_entropy(h, w.detach().long(), target, mask)
    with pytest.raises(TypeError, match="bias must be a floating-point"):
        masked_linear_cross_entropy(h, w, target, mask, bias=b.detach().int())
    bad_target = target.clone()
    bad_target[0, 0] = VOCAB
    with pytest.raises(ValueError, match=r"target id 13 at real position \(0, 0\)"):
        masked_linear_cross_entropy(h, w, bad_target, mask)


# --- differentiating the gradient (create_graph=True) ---------------------------------


def penalised_grads(fn, h, w, b, target, mask, **kw):
    """The gradient of a gradient penalty ``sum of squared first gradients`` (of the loss
    times a random upstream gradient), for h, w and b: needs a differentiable backward."""
    loss, _ = fn(h, w, b, target, mask, **kw)
    upstream = torch.randn(loss.shape, generator=torch.Generator().manual_seed(1),
                           dtype=loss.dtype)
    inputs = [t for t in (h, w, b) if t is not None]
    first = torch.autograd.grad((loss * upstream).sum(), inputs, create_graph=True)
    penalty = sum(g.nan_to_num().pow(2).sum() for g in first)
    return first, torch.autograd.grad(penalty, inputs)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_the_gradient_can_be_differentiated_again(reduction, bias):
    """A gradient penalty through the loss gets exactly the unfused loss' second-order
    gradients (it used to get a detached gradient, so the penalty added nothing)."""
    h, w, b, target, mask = random_problem(bias=bias, seed=8)
    kw = {"reduction": reduction, "label_smoothing": 0.1}
    first, second = penalised_grads(fused, h, w, b, target, mask, chunk_size=3, **kw)
    ref_first, ref_second = penalised_grads(unfused, h, w, b, target, mask, **kw)
    for got, want in zip(first, ref_first, strict=True):
        assert got.requires_grad
        torch.testing.assert_close(got.nan_to_num(), want, rtol=1e-10, atol=1e-12)
    for got, want in zip(second, ref_second, strict=True):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_a_plain_backward_after_create_graph_is_unchanged():
    h, w, b, target, mask = random_problem(seed=9)
    loss = fused(h, w, b, target, mask, chunk_size=4).loss
    plain = torch.autograd.grad(loss, [h, w, b], retain_graph=True)
    graphed = torch.autograd.grad(loss, [h, w, b], create_graph=True)
    for a, c in zip(plain, graphed, strict=True):
        torch.testing.assert_close(a, c.detach(), rtol=1e-12, atol=1e-14)
