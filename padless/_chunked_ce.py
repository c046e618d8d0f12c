"""Chunked linear + cross-entropy: per-row losses without ever holding ``[N, V]`` logits.

Private helper of :func:`padless.losses.masked_linear_cross_entropy`, which selects the real
tokens, validates the arguments and reduces the per-row losses returned here. This module
imports only torch (``padless.losses`` imports it, not the other way round).

Rows are processed ``chunk_size`` at a time through one reused ``[chunk_size, V]`` buffer, in
the forward and in the backward pass. Each chunk's gradient with respect to its logits is
``dlogits = softmax(z) - (1 - eps) * onehot(t) - eps / V`` for label smoothing ``eps``, from
which ``grad_hidden = dlogits @ W``, ``grad_W = dlogits.T @ h`` and ``grad_bias = dlogits.sum(0)``
(each row weighted by its upstream gradient).

Two backward strategies, chosen by the caller:

- ``uniform_grad=True`` (the ``"sum"``/``"mean"`` reductions, where every row receives the same
  upstream gradient): the forward pass already holds each chunk's log-softmax (one ``exp``
  from the softmax), so it finishes the three gradient products there and the backward pass
  only scales them in place. Three matmuls in all, as the unfused loss, and nothing of size
  ``N x V`` is kept. (A second backward through the same graph, with ``retain_graph=True``,
  recomputes as below.)
- ``uniform_grad=False`` (any upstream gradient, e.g. ``"none"``): the backward pass recomputes
  each chunk's logits (four matmuls in all).

Under ``create_graph=True`` (a gradient penalty, a Hessian-vector product) the backward pass
computes the same gradients chunk by chunk from differentiable operations on the inputs, so
they can be differentiated again (in the accumulation dtype; the matmuls too, under autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Default memory budget for one chunk of logits: 32 MiB, i.e. 256 rows of a 32k vocabulary in
# float32. Smaller than the [V, H] weight gradient of such a vocabulary (62.5 MiB at H = 512),
# which every method must hold anyway; larger chunks were measured no faster on CPU (512 rows:
# about 1.5 % less time), smaller ones start to cost (128 rows: about 5 % more).
LOGITS_BUDGET_BYTES = 32 * 2**20


def default_chunk_size(vocab: int, acc_dtype: torch.dtype) -> int:
    """Rows per chunk so that one ``[rows, vocab]`` logits buffer fits ``LOGITS_BUDGET_BYTES``."""
    itemsize = torch.empty((), dtype=acc_dtype).element_size()
    return max(1, LOGITS_BUDGET_BYTES // (vocab * itemsize))


def _logits_into(
    buf: torch.Tensor, h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``buf[:c] = h @ w.T + bias`` for ``h [c, H]``, ``w [V, H]``; returns ``buf[:c]``.

    ``buf`` is in the accumulation dtype; when the matmul runs in a lower precision (autocast)
    its ``[c, V]`` product is upcast into ``buf`` and the bias added in full precision.
    """
    out = buf[: h.shape[0]]
    if h.dtype == buf.dtype:
        if bias is None:
            torch.mm(h, w.t(), out=out)
        else:
            torch.addmm(bias, h, w.t(), out=out)
    else:
        out.copy_(torch.mm(h, w.t()))
        if bias is not None:
            out.add_(bias)
    return out


def _softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Row softmax of ``logits [c, V]`` in place: one fused kernel instead of separate
    max/exp/sum/divide passes, and no second ``[c, V]`` buffer. In place is safe because the
    softmax kernels (CPU and CUDA) read an element before writing it in their last pass."""
    return torch.softmax(logits, dim=1, out=logits)


def _log_softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Row log-softmax of ``logits [c, V]`` in place (fused and safe as :func:`_softmax_`)."""
    return torch.log_softmax(logits, dim=1, out=logits)


def _probs_to_dlogits_(
    probs: torch.Tensor, target: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Turn the softmax ``probs [c, V]`` in place into d(row loss)/d(logits)."""
    probs.scatter_add_(
        1, target.unsqueeze(1), probs.new_full((target.shape[0], 1), label_smoothing - 1.0)
    )
    if label_smoothing > 0:
        probs.sub_(label_smoothing / probs.shape[1])
    return probs


def _accumulate(acc: torch.Tensor, part: torch.Tensor, first: bool) -> None:
    """``acc = part`` on the first chunk, ``acc += part`` after (the buffer starts empty)."""
    if first:
        acc.copy_(part)
    else:
        acc.add_(part)


def _chunk_grads(
    dlogits: torch.Tensor,
    h: torch.Tensor,
    w: torch.Tensor,
    row_scale: torch.Tensor | None,
    grad_h: torch.Tensor | None,
    grad_w: torch.Tensor | None,
    grad_b: torch.Tensor | None,
    first: bool,
) -> None:
    """One chunk's share of the three gradients (each accumulator ``None`` if not wanted).

    ``dlogits [c, V]`` and ``row_scale [c]`` (the upstream gradient per row; ``None`` for 1) are
    in the accumulation dtype, ``h [c, H]`` and ``w [V, H]`` in the matmul dtype; ``grad_h`` is this
    chunk's ``[c, H]`` slice, ``grad_w [V, H]`` and ``grad_b [V]`` are summed over chunks.
    Rows are weighted through the narrow ``[c, H]`` factors, never through the ``[c, V]``
    buffer, to save a pass over it.
    """
    d = dlogits if dlogits.dtype == w.dtype else dlogits.to(w.dtype)
    if grad_h is not None:
        if grad_h.dtype == d.dtype:
            torch.mm(d, w, out=grad_h)
        else:
            grad_h.copy_(torch.mm(d, w))
        if row_scale is not None:
            grad_h.mul_(row_scale.unsqueeze(1))
    if grad_w is not None:
        hs = h if row_scale is None else h * row_scale.unsqueeze(1).to(h.dtype)
        if grad_w.dtype == d.dtype:
            # beta=0 ignores the uninitialised buffer on the first chunk (NaN included).
            grad_w.addmm_(d.t(), hs, beta=0 if first else 1)
        else:
            _accumulate(grad_w, torch.mm(d.t(), hs), first)
    if grad_b is not None:
        if row_scale is None:
            _accumulate(grad_b, dlogits.sum(dim=0), first)
        else:
            grad_b.addmv_(dlogits.t(), row_scale, beta=0 if first else 1)


def _grad_accumulators(
    h: torch.Tensor, w: torch.Tensor, acc_dtype: torch.dtype, wanted: tuple[bool, ...]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Buffers ``[N, H]``, ``[V, H]``, ``[V]`` in ``acc_dtype`` for the wanted gradients.

    The chunks overwrite them, so they start uninitialised; with no rows at all (an all-pad
    batch) there is no chunk and the gradients are zero.
    """
    new = torch.empty if h.shape[0] else torch.zeros
    kw = {"dtype": acc_dtype, "device": h.device}
    want_h, want_w, want_b = wanted
    return (
        new(h.shape, **kw) if want_h else None,
        new(w.shape, **kw) if want_w else None,
        new(w.shape[0], **kw) if want_b else None,
    )


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Per-row ``cross_entropy(h @ w.T + bias, target)`` -> ``[N]``, chunk by chunk.

    ``hidden [N, H]``, ``weight [V, H]``, ``bias_in [V]`` (or ``None``) are the caller's tensors,
    only there to receive their gradients (in their own dtypes); the work is done on detached
    copies ``h``, ``w`` in the matmul dtype and ``bias`` in ``acc_dtype``, the dtype of the
    logits buffer and of the result. ``target [N]`` long.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias_in: torch.Tensor | None,
        target: torch.Tensor,
        h: torch.Tensor,
        w: torch.Tensor,
        bias: torch.Tensor | None,
        label_smoothing: float,
        chunk_size: int,
        acc_dtype: torch.dtype,
        precompute: bool,
    ) -> torch.Tensor:
        n, vocab = h.shape[0], w.shape[0]
        ctx.label_smoothing, ctx.chunk_size, ctx.acc_dtype = label_smoothing, chunk_size, acc_dtype
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias_in is None else bias_in.dtype)
        losses = torch.empty(n, dtype=acc_dtype, device=h.device)
        buf = torch.empty(min(chunk_size, n), vocab, dtype=acc_dtype, device=h.device)
        if precompute:
            grads = _grad_accumulators(h, w, acc_dtype, ctx.needs_input_grad[:3])
        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                h_c, t_c = h[start:stop], target[start:stop]
                logits = _logits_into(buf, h_c, w, bias)
                # The same log_softmax as the unfused loss, so the same numbers.
                log_probs = _log_softmax_(logits)
                loss_c = torch.neg(
                    log_probs.gather(1, t_c.unsqueeze(1)).squeeze(1), out=losses[start:stop]
                )
                if label_smoothing > 0:
                    # F.cross_entropy's smoothing: (1 - eps) * nll - eps * mean(log p).
                    loss_c.mul_(1.0 - label_smoothing).sub_(
                        log_probs.mean(dim=1), alpha=label_smoothing
                    )
                if precompute:
                    grad_h, grad_w, grad_b = grads
                    _chunk_grads(
                        _probs_to_dlogits_(log_probs.exp_(), t_c, label_smoothing),
                        h_c,
                        w,
                        None,
                        None if grad_h is None else grad_h[start:stop],
                        grad_w,
                        grad_b,
                        first=start == 0,
                    )
        # Kept on ctx, not saved: the first backward hands these very buffers on as the
        # gradients (scaled in place, so no second [V, H] copy) and drops them.
        ctx.precomputed = grads if precompute else None
        # For a recomputing backward: always for uniform_grad=False, and with retain_graph for
        # the backward passes after the first. These are the caller's tensors (references, no
        # copies) except under autocast, where h and w are the low-precision casts; the inputs
        # themselves are kept for a differentiable backward (create_graph=True).
        ctx.save_for_backward(h, w, bias, target, hidden, weight, bias_in)
        return losses

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor):
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        acc = ctx.acc_dtype
        if torch.is_grad_enabled():  # create_graph=True: gradients that have a graph
            ctx.precomputed = None
            _, _, _, target, hidden, weight, bias_in = ctx.saved_tensors
            grads = _differentiable_grads(hidden, weight, bias_in, target, grad_losses,
                                          ctx.label_smoothing, ctx.chunk_size, acc,
                                          ctx.needs_input_grad[:3])
            return (*grads, *([None] * 8))
        if ctx.precomputed is not None:
            (grad_h, grad_w, grad_b), ctx.precomputed = ctx.precomputed, None
            # Every row got the same upstream gradient (sum/mean): scale the finished sums.
            scale = grad_losses[0] if grad_losses.numel() else grad_losses.new_zeros(())
            if grad_h is not None:
                grad_h.mul_(grad_losses.unsqueeze(1).to(acc))
            for grad in (grad_w, grad_b):
                if grad is not None:
                    grad.mul_(scale)
        else:
            h, w, bias, target, *_ = ctx.saved_tensors
            n, vocab, chunk_size = h.shape[0], w.shape[0], ctx.chunk_size
            grad_h, grad_w, grad_b = _grad_accumulators(h, w, acc, ctx.needs_input_grad[:3])
            grad_losses = grad_losses.to(acc)
            buf = torch.empty(min(chunk_size, n), vocab, dtype=acc, device=h.device)
            with torch.autocast(h.device.type, enabled=False):
                for start in range(0, n, chunk_size):
                    stop = min(start + chunk_size, n)
                    t_c = target[start:stop]
                    probs = _softmax_(_logits_into(buf, h[start:stop], w, bias))
                    _chunk_grads(
                        _probs_to_dlogits_(probs, t_c, ctx.label_smoothing),
                        h[start:stop],
                        w,
                        grad_losses[start:stop],
                        None if grad_h is None else grad_h[start:stop],
                        grad_w,
                        grad_b,
                        first=start == 0,
                    )
        return (
            None if grad_h is None else grad_h.to(h_dtype),
            None if grad_w is None else grad_w.to(w_dtype),
            None if grad_b is None else grad_b.to(b_dtype),
            *([None] * 8),
        )


def _differentiable_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    grad_losses: torch.Tensor,
    label_smoothing: float,
    chunk_size: int,
    acc_dtype: torch.dtype,
    wanted: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The three gradients as :meth:`_ChunkedLinearCrossEntropy.backward` computes them, from
    out-of-place operations on the inputs, so autograd can differentiate them again."""
    want_h, want_w, want_b = wanted
    n, vocab = hidden.shape[0], weight.shape[0]
    w = weight.to(acc_dtype)
    b = None if bias is None else bias.to(acc_dtype)
    grad_h: list[torch.Tensor] | torch.Tensor = []
    grad_w = w.new_zeros(weight.shape)
    grad_b = None if b is None else w.new_zeros(vocab)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        h_c, t_c = hidden[start:stop].to(acc_dtype), target[start:stop]
        probs = torch.softmax(F.linear(h_c, w, b), dim=1)
        dlogits = probs.scatter_add(
            1, t_c.unsqueeze(1), probs.new_full((stop - start, 1), label_smoothing - 1.0)
        ) - label_smoothing / vocab
        dlogits = dlogits * grad_losses[start:stop].to(acc_dtype).unsqueeze(1)
        if want_h:
            grad_h.append(dlogits @ w)
        if want_w:
            grad_w = grad_w + dlogits.t() @ h_c
        if want_b and grad_b is not None:
            grad_b = grad_b + dlogits.sum(dim=0)
    if want_h:
        grad_h = torch.cat(grad_h) if grad_h else hidden.new_zeros(hidden.shape, dtype=acc_dtype)
    return (
        grad_h.to(hidden.dtype) if want_h else None,
        grad_w.to(weight.dtype) if want_w else None,
        grad_b.to(bias.dtype) if want_b and bias is not None else None,
    )


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    *,
    label_smoothing: float,
    chunk_size: int | None,
    acc_dtype: torch.dtype,
    uniform_grad: bool,
) -> torch.Tensor:
    """Per-row cross-entropy of ``hidden @ weight.T + bias`` against ``target`` -> ``[N]``.

    Args:
        hidden: ``[N, H]`` rows to score (already the real tokens only).
        weight: ``[V, H]``. bias: ``[V]`` or ``None``.
        target: ``[N]`` class ids in ``[0, V)``.
        label_smoothing: ``eps``; ``eps / V`` of the target mass on every class.
        chunk_size: rows of logits alive at once; ``None`` fits ``LOGITS_BUDGET_BYTES``.
        acc_dtype: dtype of the logits buffer, the losses and the gradient sums (float32, or
            float64 for float64 inputs).
        uniform_grad: promise that the upstream gradient of the result is the same for every
            row (the result is summed or averaged); enables the three-matmul strategy.

    Returns:
        ``[N]`` losses in ``acc_dtype``, differentiable with respect to hidden, weight, bias.

    Under autocast the matmuls run in the autocast dtype (as ``F.linear`` would), while the
    logits, the softmax and the gradient sums across chunks stay in ``acc_dtype``.
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type) and hidden.dtype != torch.float64:
        mm_dtype = torch.get_autocast_dtype(device_type)
    else:
        mm_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    if chunk_size is None:
        chunk_size = default_chunk_size(weight.shape[0], acc_dtype)
    # Finishing the gradients in the forward pass only pays if a backward pass will follow.
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    # Detached working copies (no copy when the dtype already matches); the Function returns
    # the gradients of the originals itself.
    h = hidden.detach().to(mm_dtype)
    w = weight.detach().to(mm_dtype)
    b = None if bias is None else bias.detach().to(acc_dtype)
    return _ChunkedLinearCrossEntropy.apply(
        hidden,
        weight,
        bias,
        target,
        h,
        w,
        b,
        label_smoothing,
        chunk_size,
        acc_dtype,
        uniform_grad and wants_grad,
    )
