r"""Float64 row-wise losses: value and analytic gradient in one pass over chunks of rows (private module).

Each loss of this package is a per-position function ``C(z; target)`` of the student logits ``z`` ``[..., K]``.
:class:`RowwiseLoss` evaluates it in float64 on chunks of rows (:func:`~._numerics.row_slices`; the chunk
size is :data:`proxy_end2.uncertainty._numerics.CHUNK_ELEMENTS`) and computes ``dC/dz`` in the same pass,
so no float64 ``[..., K]`` tensor outlives the forward: the float64 temporaries are a few chunk-sized
tensors whatever the batch, plus, for the whole batch, one int64 index per element with alpha >= 10 (see
:func:`asymptotic_indices`). The saved gradient is one ``[..., K]`` tensor in the logits' dtype (float32 for
fp16/bf16 logits).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..uncertainty._numerics import ASYMPTOTIC_MIN, row_slices
from ..uncertainty.dirichlet import concentration_bounds


def grad_dtype(logits_dtype: torch.dtype) -> torch.dtype:
    """dtype in which the forward stores ``dC/dz``: the logits' own for float32/float64; float32 for fp16 and
    bf16 (a loss-scaled fp16 backward multiplies it by the scale before it is rounded to fp16, as the
    textbook autograd path would, so small gradients do not underflow)."""
    return torch.float64 if logits_dtype == torch.float64 else torch.float32


def needs_clamp(logits: Tensor, lo: float, hi: float) -> bool:
    """Whether some logit is outside ``[lo, hi]`` or NaN (one reduction and one host sync for the batch)."""
    if logits.numel() == 0:
        return False
    z_min, z_max = torch.aminmax(logits.detach())
    z_min, z_max = torch.stack([z_min, z_max]).double().tolist()
    return not (z_min >= lo and z_max <= hi)


def exp_clamped(logits: Tensor, lo: float, hi: float, clamp: bool) -> tuple[Tensor, Tensor | None]:
    """``e = exp(clamp(z, lo, hi))`` in float64 (a new tensor) and, if ``clamp``, the ``[n, K]`` bool mask
    of where the clamp is inactive (its derivative is 1; 0 elsewhere, NaN logits included)."""
    z = logits.to(torch.float64, copy=True)  # [n, K]
    inside = None
    if clamp:
        inside = (z >= lo) & (z <= hi)
        z.clamp_(min=lo, max=hi)
    return z.exp_(), inside


def asymptotic_indices(logits: Tensor, model_offset: float, chunks: list[slice]) -> list[Tensor | None]:
    r"""For each row chunk of ``logits`` ``[N, K]``, the flat indices (within the chunk) of the elements that
    take the asymptotic series, :math:`\alpha = e^z + c \ge 10`, i.e. :math:`z \ge \ln(10 - c)`; None where
    there are none. Found for the whole batch at once (two host syncs, not two per chunk), in the logits'
    dtype: a threshold rounded to fp16 moves the switch by at most ~0.01 in :math:`\alpha`, where both
    branches are accurate to float64 round-off. Memory: one int64 per such element."""
    if model_offset >= ASYMPTOTIC_MIN:
        threshold = -math.inf
    else:
        threshold = math.log(ASYMPTOTIC_MIN - model_offset)
    k = logits.shape[-1]
    flat = torch.nonzero(logits.reshape(-1) >= threshold).squeeze(1)  # [#big], sorted
    if flat.numel() == 0:
        return [None] * len(chunks)
    starts = torch.tensor([rows.start * k for rows in chunks] + [chunks[-1].stop * k], device=flat.device)
    bounds = torch.searchsorted(flat, starts).tolist()
    out = []
    for i, rows in enumerate(chunks):
        lo, hi = bounds[i], bounds[i + 1]
        out.append(flat[lo:hi] - rows.start * k if hi > lo else None)
    return out


class RowwiseLoss(torch.autograd.Function):
    """A per-position loss ``C(z; target)`` evaluated in float64 on chunks of rows, with its analytic gradient
    computed in the same pass.

    ``chunk_fn(z, target, extra, clamp, index, grad_out, *scalars) -> [n]`` works on a chunk of rows (``z``,
    ``target``: ``[n, K]``, sliced from the ``target`` tensor ``[..., K]`` or, when ``target`` is a callable
    ``rows -> [n, K]`` over the flattened leading shape, built by it chunk by chunk (a top-k teacher cache
    densified on the fly); ``extra``: ``[n]`` or None; ``clamp``: whether some logit of the batch is
    outside the concentration bounds; ``index``: the chunk's elements that take the asymptotic series, see
    :func:`asymptotic_indices`; the first scalar is the model offset) and, if ``grad_out`` (``[n, K]``) is
    given, writes ``dC/dz`` into it. The chunks need no host synchronisation.
    When a gradient is needed (grad mode on and ``logits.requires_grad``) the forward fills one ``[..., K]``
    tensor with it, in :func:`_grad_dtype` of the logits (the logits' dtype; float32 for fp16/bf16), and
    saves only that tensor: the backward is ``upstream * saved``, no float64 ``[..., K]`` tensor outlives
    the forward, and the logits and teacher statistics are not saved. Otherwise no gradient is computed.
    The float64 temporaries are bounded by the chunk size whatever ``prod(leading) * K`` is. No gradient
    flows to the teacher side (the target is a constant). Not twice differentiable.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        chunk_fn: Callable[..., Tensor],
        need_grad: bool,
        logits: Tensor,
        target: Tensor | Callable[[slice], Tensor],
        row_extra: Tensor | None,
        *scalars: float,
    ) -> Tensor:
        k = logits.shape[-1]
        z = logits.reshape(-1, k)  # [N, K]
        target_rows = target.reshape(-1, k).__getitem__ if torch.is_tensor(target) else target  # rows -> [n, K]
        extra = None if row_extra is None else row_extra.reshape(-1)  # [N]
        n = z.shape[0]
        value = torch.empty(n, dtype=torch.float64, device=logits.device)  # [N]
        grad = torch.empty(z.shape, dtype=grad_dtype(logits.dtype), device=logits.device) if need_grad else None
        lo, hi = concentration_bounds(k, torch.float64)
        clamp = needs_clamp(z, lo, hi)
        chunks = row_slices(n, k, logits.device)
        indices = asymptotic_indices(z, scalars[0], chunks) if chunks else []
        for rows, index in zip(chunks, indices):
            value[rows] = chunk_fn(
                z[rows], target_rows(rows), None if extra is None else extra[rows], clamp, index,
                None if grad is None else grad[rows], *scalars,
            )
        ctx.logits_dtype, ctx.logits_shape, ctx.num_scalars = logits.dtype, logits.shape, len(scalars)
        ctx.save_for_backward(grad)
        return value.reshape(logits.shape[:-1])  # [...]

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor):  # type: ignore[override]
        no_grads = (None,) * (5 + ctx.num_scalars)
        if not ctx.needs_input_grad[2]:
            return no_grads
        (grad,) = ctx.saved_tensors  # [N, K], dC/dz
        if grad is None:
            raise RuntimeError("the loss was computed without its gradient (grad mode off or logits without "
                               "requires_grad) and cannot be differentiated")
        upstream = grad_output.reshape(-1, 1).to(torch.float64)  # [N, 1]
        if grad.dtype == torch.float64 and ctx.logits_dtype == torch.float64:
            out = grad * upstream  # [N, K]
        else:  # multiply in float64 on row chunks, round once to the logits' dtype
            out = torch.empty(grad.shape, dtype=ctx.logits_dtype, device=grad.device)
            for rows in row_slices(grad.shape[0], grad.shape[1], grad.device):
                torch.mul(grad[rows], upstream[rows], out=out[rows])
        return (None, None, out.reshape(ctx.logits_shape)) + no_grads[3:]


def apply_rowwise(chunk_fn, logits: Tensor, target, row_extra: Tensor | None, *scalars: float) -> Tensor:
    """:class:`RowwiseLoss` of ``chunk_fn``; ``target`` is a tensor ``[..., K]`` or a callable ``rows -> [n, K]``."""
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    return RowwiseLoss.apply(chunk_fn, need_grad, logits, target, row_extra, *scalars)
