r"""Per-position distillation losses from an ensemble into one model (no reduction, no masking).

Pure torch (no fairseq): the fairseq criteria call the ``*_from_stats`` functions with teacher statistics
streamed one member at a time (:class:`~proxy_end2.uncertainty.EnsembleStatisticsAccumulator`); the plain
functions build the statistics from stacked ``[..., M, K]`` teacher logits and then call the same
``*_from_stats`` code. Any leading shape ``[...]`` (``[B, K]`` for image classifiers, ``[B, T, K]`` for
sequence models); classes last; nats.

* :func:`proxy_dirichlet_loss`: the Proxy-Dirichlet reverse-KL loss (the method; float64);
* :func:`dirichlet_nll_loss`: EnD\ :sup:`2`, the ensemble's mean negative Dirichlet log-likelihood (float64);
* :func:`ensemble_kl_loss`: classic ensemble distillation :math:`\mathrm{KL}(\bar p \| \mathrm{softmax}(z))`.

Student logits may be fp16/bf16: they are upcast inside, and their gradient comes back in their dtype.

References:
    Ryabinin, Malinin & Gales, "Scaling Ensemble Distribution Distillation to Many Classes with Proxy
    Targets", NeurIPS 2021, https://arxiv.org/abs/2105.06987.
    Malinin, Mlodozeniec & Gales, "Ensemble Distribution Distillation", ICLR 2020,
    https://arxiv.org/abs/1905.00076.
    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015,
    https://arxiv.org/abs/1503.02531.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .uncertainty.dirichlet import (
    _ASYMPTOTIC_MIN,
    _LN_2PI,
    _digamma_minus_log,
    _lgamma_stirling_remainder,
    _x_trigamma_minus_one,
    concentration_bounds,
)
from .uncertainty.ensemble import EnsembleStatistics, _default_chunk_elements, _row_slices, ensemble_statistics
from .uncertainty.proxy import proxy_target_precision

__all__ = [
    "proxy_dirichlet_loss",
    "proxy_dirichlet_loss_from_stats",
    "dirichlet_nll_loss",
    "dirichlet_nll_loss_from_stats",
    "ensemble_kl_loss",
    "ensemble_kl_loss_from_stats",
]

_FLOAT32_EPS = 2.0**-23


# ------------------------------------------------------------------------------------------------------
# Argument checks
# ------------------------------------------------------------------------------------------------------
def _check_student(student_logits: Tensor) -> None:
    if not student_logits.is_floating_point():
        raise ValueError(f"student logits must be a floating point tensor, got dtype {student_logits.dtype}")
    if student_logits.dim() < 1:
        raise ValueError("student logits must have a class dimension [..., K], got a 0-dim tensor")


def _check_student_stats(student_logits: Tensor, stats: EnsembleStatistics) -> None:
    _check_student(student_logits)
    if student_logits.shape[-1] != stats.num_classes:
        raise ValueError(
            f"class dimension mismatch: student logits have K = {student_logits.shape[-1]}, "
            f"teacher statistics have K = {stats.num_classes}"
        )
    if student_logits.shape[:-1] != stats.leading_shape:
        raise ValueError(
            f"leading shape mismatch: student logits {tuple(student_logits.shape)} [..., K] vs teacher "
            f"statistics with leading shape {tuple(stats.leading_shape)}"
        )


def _check_student_teacher(student_logits: Tensor, teacher_logits: Tensor) -> None:
    _check_student(student_logits)
    if teacher_logits.dim() < 2:
        raise ValueError(f"teacher logits must be [..., M, K], got shape {tuple(teacher_logits.shape)}")
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise ValueError(
            f"class dimension mismatch: student logits have K = {student_logits.shape[-1]}, "
            f"teacher logits have K = {teacher_logits.shape[-1]}"
        )
    if teacher_logits.shape[:-2] != student_logits.shape[:-1]:
        raise ValueError(
            f"leading shape mismatch: student logits {tuple(student_logits.shape)} [..., K] need teacher "
            f"logits [..., M, K] with the same [...], got {tuple(teacher_logits.shape)}"
        )


def _check_model_offset(model_offset: float) -> None:
    if not (math.isfinite(model_offset) and model_offset >= 0.0):
        raise ValueError(f"model_offset must be a finite number >= 0, got {model_offset}")


# ------------------------------------------------------------------------------------------------------
# Float64 row-wise losses: value and analytic gradient in one pass
# ------------------------------------------------------------------------------------------------------
#: Row-chunk size (elements) of the float64 passes; ``None``: by device (``2**20`` on CPU, ``2**24`` on GPU,
#: see :func:`proxy_end2.uncertainty.ensemble._default_chunk_elements`). An int overrides it (tests,
#: benchmarks). Peak of one chunk, measured on CUDA with 2^24 elements (benchmarks/README.md): 8.1
#: chunk-sized float64 tensors for the proxy loss, 6.8 for EnD^2, counting the chunk's slice of the
#: gradient output (float32 there, half a unit); the earlier two-pass version peaked at 15.1. Plus, for the
#: whole batch, one int64 index per element with alpha >= 10 (see :func:`_asymptotic_indices`).
_CHUNK_ELEMENTS: int | None = None


def _row_chunks(num_rows: int, num_classes: int, device: torch.device) -> list[slice]:
    chunk = _CHUNK_ELEMENTS if _CHUNK_ELEMENTS is not None else _default_chunk_elements(device)
    return _row_slices(num_rows, num_classes, device, chunk)


def _grad_dtype(logits_dtype: torch.dtype) -> torch.dtype:
    """dtype in which the forward stores ``dC/dz``: the logits' own for float32/float64; float32 for fp16 and
    bf16 (a loss-scaled fp16 backward multiplies it by the scale before it is rounded to fp16, as the
    textbook autograd path would, so small gradients do not underflow)."""
    return torch.float64 if logits_dtype == torch.float64 else torch.float32


def _needs_clamp(logits: Tensor, lo: float, hi: float) -> bool:
    """Whether some logit is outside ``[lo, hi]`` or NaN (one reduction and one host sync for the batch)."""
    if logits.numel() == 0:
        return False
    z_min, z_max = torch.aminmax(logits.detach())
    z_min, z_max = torch.stack([z_min, z_max]).double().tolist()
    return not (z_min >= lo and z_max <= hi)


def _exp_clamped(logits: Tensor, lo: float, hi: float, clamp: bool) -> tuple[Tensor, Tensor | None]:
    """``e = exp(clamp(z, lo, hi))`` in float64 (a new tensor) and, if ``clamp``, the ``[n, K]`` bool mask
    of where the clamp is inactive (its derivative is 1; 0 elsewhere, NaN logits included)."""
    z = logits.to(torch.float64, copy=True)  # [n, K]
    inside = None
    if clamp:
        inside = (z >= lo) & (z <= hi)
        z.clamp_(min=lo, max=hi)
    return z.exp_(), inside


def _asymptotic_indices(logits: Tensor, model_offset: float, chunks: list[slice]) -> list[Tensor | None]:
    r"""For each row chunk of ``logits`` ``[N, K]``, the flat indices (within the chunk) of the elements that
    take the asymptotic series, :math:`\alpha = e^z + c \ge 10`, i.e. :math:`z \ge \ln(10 - c)`; None where
    there are none. Found for the whole batch at once (two host syncs, not two per chunk), in the logits'
    dtype: a threshold rounded to fp16 moves the switch by at most ~0.01 in :math:`\alpha`, where both
    branches are accurate to float64 round-off. Memory: one int64 per such element."""
    if model_offset >= _ASYMPTOTIC_MIN:
        threshold = -math.inf
    else:
        threshold = math.log(_ASYMPTOTIC_MIN - model_offset)
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


def _series(x: Tensor, with_t: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    r"""The asymptotic series of :math:`r(x)`, :math:`\phi(x)` and (if ``with_t``) :math:`t(x)` for
    ``x >= 10``, sharing :math:`1/x` and :math:`1/x^2`. The same expressions, term for term, as
    :func:`~proxy_end2.uncertainty.dirichlet._digamma_minus_log`,
    :func:`~proxy_end2.uncertainty.dirichlet._lgamma_stirling_remainder` and
    :func:`~proxy_end2.uncertainty.dirichlet._x_trigamma_minus_one` (so the same values)."""
    inv = x.reciprocal()
    i2 = inv * inv
    r = -0.5 * inv - i2 * (
        1 / 12 - i2 * (1 / 120 - i2 * (1 / 252 - i2 * (1 / 240 - i2 * (1 / 132 - i2 * (691 / 32760 - i2 / 12)))))
    )
    inner = 691 / 360360 - i2 * (1 / 156 - i2 * 3617 / 122400)
    phi = inv * (1 / 12 - i2 * (1 / 360 - i2 * (1 / 1260 - i2 * (1 / 1680 - i2 * (1 / 1188 - i2 * inner)))))
    t = None
    if with_t:
        inner = 5 / 66 - i2 * (691 / 2730 - i2 * (7 / 6 - i2 * 3617 / 510))
        t = 0.5 * inv + i2 * (1 / 6 - i2 * (1 / 30 - i2 * (1 / 42 - i2 * (1 / 30 - i2 * inner))))
    return r, phi, t


def _remainders(alphas: Tensor, log_alphas: Tensor, index: Tensor | None, with_r: bool):
    r"""Elementwise remainders of ``alphas`` ``[n, K]`` (float64, ``log_alphas`` = its log) for EnD\ :sup:`2`:
    ``r`` :math:`= \psi(\alpha) - \ln\alpha` (if ``with_r``) and ``phi2`` :math:`= \phi(\alpha) +
    \tfrac12\ln 2\pi = \ln\Gamma(\alpha) - (\alpha - \tfrac12)\ln\alpha + \alpha`, with the direct formulas of
    :mod:`proxy_end2.uncertainty.dirichlet` (``torch.digamma``/``lgamma``) where :math:`\alpha < 10` and the
    asymptotic series evaluated only on the elements of ``index`` (flat indices, :math:`\alpha \ge 10`, see
    :func:`_asymptotic_indices`); the direct values computed there are overwritten (they are finite).
    """
    r = torch.digamma(alphas).sub_(log_alphas) if with_r else None  # [n, K]
    shifted = alphas - 0.5
    phi2 = torch.lgamma(alphas).addcmul_(shifted, log_alphas, value=-1.0).add_(alphas)  # [n, K]
    del shifted
    if index is not None:
        big = alphas.view(-1).index_select(0, index)
        r_big, phi_big, _ = _series(big, with_t=False)
        if with_r:
            r.view(-1).index_copy_(0, index, r_big)
        phi2.view(-1).index_copy_(0, index, phi_big.add_(0.5 * _LN_2PI))
    return r, phi2


class _RowwiseLoss(torch.autograd.Function):
    """A per-position loss ``C(z; target)`` evaluated in float64 on chunks of rows, with its analytic gradient
    computed in the same pass.

    ``chunk_fn(z, target, extra, clamp, index, grad_out, *scalars) -> [n]`` works on a chunk of rows (``z``,
    ``target``: ``[n, K]``; ``extra``: ``[n]`` or None; ``clamp``: whether some logit of the batch is
    outside the concentration bounds; ``index``: the chunk's elements that take the asymptotic series, see
    :func:`_asymptotic_indices`; the first scalar is the model offset) and, if ``grad_out`` (``[n, K]``) is
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
        target: Tensor,
        row_extra: Tensor | None,
        *scalars: float,
    ) -> Tensor:
        k = logits.shape[-1]
        z, tgt = logits.reshape(-1, k), target.reshape(-1, k)  # [N, K]
        extra = None if row_extra is None else row_extra.reshape(-1)  # [N]
        n = z.shape[0]
        value = torch.empty(n, dtype=torch.float64, device=logits.device)  # [N]
        grad = torch.empty(z.shape, dtype=_grad_dtype(logits.dtype), device=logits.device) if need_grad else None
        lo, hi = concentration_bounds(k, torch.float64)
        clamp = _needs_clamp(z, lo, hi)
        chunks = _row_chunks(n, k, logits.device)
        indices = _asymptotic_indices(z, scalars[0], chunks) if chunks else []
        for rows, index in zip(chunks, indices):
            value[rows] = chunk_fn(
                z[rows], tgt[rows], None if extra is None else extra[rows], clamp, index,
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
            for rows in _row_chunks(grad.shape[0], grad.shape[1], grad.device):
                torch.mul(grad[rows], upstream[rows], out=out[rows])
        return (None, None, out.reshape(ctx.logits_shape)) + no_grads[3:]


def _apply_rowwise(chunk_fn, logits: Tensor, target: Tensor, row_extra: Tensor | None, *scalars: float) -> Tensor:
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    return _RowwiseLoss.apply(chunk_fn, need_grad, logits, target, row_extra, *scalars)


# ------------------------------------------------------------------------------------------------------
# Proxy-Dirichlet reverse KL
# ------------------------------------------------------------------------------------------------------
def _proxy_chunk(
    logits: Tensor,
    log_mean_probs: Tensor,
    precision: Tensor,
    clamp: bool,
    index: Tensor | None,
    grad_out: Tensor | None,
    model_offset: float,
) -> Tensor:
    r"""Value (float64 ``[n]``) of the proxy loss for a chunk of rows and, into ``grad_out``, its analytic
    gradient; see :func:`proxy_dirichlet_loss_from_stats`.

    With :math:`a_k = \alpha_k`, :math:`L = \ln\alpha_0`, :math:`r = \psi - \ln`, :math:`S = \sum_k\bar p_k`
    and :math:`\phi` the Stirling remainder of :math:`\ln\Gamma`, the value is

    .. math::

        C = -\sum_k \bar p_k(\ln a_k + r(a_k)) + S(L + r(\alpha_0))
            - \frac1B\Big[\sum_k \big(\tfrac12\ln a_k + \phi(a_k) - (a_k - 1) r(a_k)\big)
            - \tfrac{K-1}{2}(L - \ln 2\pi) - \tfrac K2 L - \phi(\alpha_0) + (\alpha_0 - K) r(\alpha_0)\Big],

    the E-term and the Stirling-form entropy of :func:`~proxy_end2.uncertainty.dirichlet_entropy` with the
    :math:`\ln\alpha_0` and :math:`r(\alpha_0)` parts taken out of the class sums (:math:`(\alpha_0 - K)`
    is summed as :math:`\sum_k e^{z_k} + K(c - 1)`). Where :math:`a_k < 10` the class terms are evaluated
    as :math:`\bar p_k\psi(a_k)` and :math:`\ln\Gamma(a_k) + a_k - (a_k - 1)\psi(a_k)` (the same quantities:
    :math:`\ln a_k` cancels), with ``torch.digamma``/``lgamma``; where :math:`a_k \ge 10` with
    :math:`\ln a_k + r(a_k)` and :math:`\tfrac12\ln a_k + \phi(a_k) + \tfrac12\ln 2\pi - (a_k - 1) r(a_k)`
    from the asymptotic series, on those elements only (:math:`(a_k - 1) r(a_k)` is bounded by 1/2, so
    nothing of size :math:`a_k\ln a_k` is formed). The round-off is that of the whole-tensor form: the
    class sums grow like :math:`K\ln\alpha_0` and are divided by :math:`B`, the E-term sums are of size
    :math:`\ln\alpha_0`.

    The gradient: with :math:`t(x) = x\psi'(x) - 1` the textbook gradient

    .. math::

        \frac{\partial C}{\partial \alpha_k} = \psi'(\alpha_k)\Big[\frac{\alpha_k - 1}{B} - \bar p_k\Big]
            - \psi'(\alpha_0)\Big[\frac{\alpha_0 - K}{B} - S\Big]

    is rewritten without its two :math:`O(1/B)` parts that cancel to :math:`O(1/(\alpha B))`
    (:math:`(\alpha-1)\psi'(\alpha) = 1 + t(\alpha) - \psi'(\alpha)`):

    .. math::

        \frac{\partial C}{\partial \alpha_k} = \frac{t(\alpha_k) - \psi'(\alpha_k)}{B}
            - \bar p_k \psi'(\alpha_k) + \underbrace{\frac{K \psi'(\alpha_0) - t(\alpha_0)}{B}
            + S\,\psi'(\alpha_0)}_{\text{per row}},

    and :math:`\partial\alpha_k/\partial z_k = e^{z_k}` (0 where the logit is clamped). ``S`` (1 up to
    float32 round-off) makes this the exact derivative of the computed value. For :math:`\alpha_k \ge 10`,
    :math:`t(\alpha_k)` and :math:`t(\alpha_k) - \psi'(\alpha_k)` come from the asymptotic series (no
    cancellation); below, :math:`\psi'` is ``torch.polygamma(1, .)``.
    """
    k = logits.shape[-1]
    c = model_offset
    lo, hi = concentration_bounds(k, torch.float64)
    e, inside = _exp_clamped(logits, lo, hi, clamp)  # [n, K], exp(z_k) = alpha_k - c
    sum_e = e.sum(-1, keepdim=True)  # [n, 1]
    a0 = sum_e + k * c  # [n, 1]
    alphas = e + c  # [n, K]
    with_grad = grad_out is not None
    # alpha < 10 (direct): psi(a), and the entropy class term 1/2 ln a + phi(a) + 1/2 ln 2 pi - (a - 1) r(a),
    # which is lgamma(a) + a - (a - 1) psi(a) there (ln a cancels); a - 1 = e^z + (c - 1)
    psi = torch.digamma(alphas)  # [n, K]
    h = torch.lgamma(alphas).add_(alphas).addcmul_(e, psi, value=-1.0)  # [n, K]
    if c != 1.0:
        h.add_(psi, alpha=1.0 - c)
    trigamma = t_minus = None
    if with_grad:
        trigamma = torch.polygamma(1, alphas)  # [n, K], psi'(a)
        if c == 1.0:
            t_minus = torch.mul(e, trigamma).sub_(1.0)  # [n, K], t(a) - psi'(a) = (a - 1) psi'(a) - 1
        else:
            t_minus = torch.mul(alphas, trigamma).sub_(1.0).sub_(trigamma)
    if index is not None:  # alpha >= 10: the asymptotic series (no cancellation), only on those elements
        big = alphas.view(-1).index_select(0, index)
        big_e = e.view(-1).index_select(0, index)
        r_big, phi_big, t_big = _series(big, with_grad)
        log_big = torch.log(big)
        psi.view(-1).index_copy_(0, index, log_big + r_big)
        h_big = (0.5 * log_big + phi_big + 0.5 * _LN_2PI).addcmul_(big_e + (c - 1.0), r_big, value=-1.0)
        h.view(-1).index_copy_(0, index, h_big)
        if with_grad:
            trigamma_big = (1.0 + t_big) / big
            trigamma.view(-1).index_copy_(0, index, trigamma_big)
            t_minus.view(-1).index_copy_(0, index, t_big.sub_(trigamma_big))
    del alphas
    h_sum = h.sum(-1, keepdim=True)  # [n, 1]
    del h
    pbar = log_mean_probs.to(torch.float64, copy=True).exp_()  # [n, K]
    mass = pbar.sum(-1, keepdim=True)  # [n, 1], S
    psi_sum = psi.mul_(pbar).sum(-1, keepdim=True)  # [n, 1], sum_k pbar_k psi(a_k)
    del psi
    log_a0 = torch.log(a0)  # [n, 1]
    r0 = _digamma_minus_log(a0)  # [n, 1]
    expected_nll = mass * (log_a0 + r0) - psi_sum  # [n, 1]
    entropy = (
        h_sum
        - (k - 0.5) * log_a0
        - 0.5 * _LN_2PI
        - _lgamma_stirling_remainder(a0)
        + (sum_e + k * (c - 1.0)) * r0
    )  # [n, 1]
    bcol = precision.to(torch.float64).unsqueeze(-1)  # [n, 1]
    if with_grad:
        t0 = _x_trigamma_minus_one(a0)  # [n, 1]
        trigamma0 = (1.0 + t0) / a0  # [n, 1]
        per_row = (k * trigamma0 - t0) / bcol + mass * trigamma0  # [n, 1]
        grad = torch.addcdiv(per_row, t_minus, bcol, out=t_minus)  # [n, K], (t - psi')/B + per_row
        grad.addcmul_(pbar, trigamma, value=-1.0)  # - pbar_k psi'(a_k)
        if inside is not None:
            grad.masked_fill_(~inside, 0.0)
        torch.mul(grad, e, out=grad_out)  # dC/dz_k = e^{z_k} dC/d alpha_k
    return (expected_nll - entropy / bcol).squeeze(-1)  # [n]


def proxy_dirichlet_loss_from_stats(
    student_logits: Tensor,
    stats: EnsembleStatistics,
    model_offset: float = 1.0,
    target_offset: float = 1.0,
    precision: str = "mkl",
    eps: float = _FLOAT32_EPS,
) -> Tensor:
    r"""Proxy-Dirichlet reverse-KL loss per position (Ryabinin et al. 2021), nats.

    .. math::

        C(z) &= -\sum_k \bar p_k\big[\psi(\alpha_k) - \psi(\alpha_0)\big]
                - \frac{\mathcal{H}[\mathrm{Dir}(\alpha)]}{B} \\
             &= \frac{1}{B}\,\mathrm{KL}\big(\mathrm{Dir}(\alpha) \,\big\|\, \mathrm{Dir}(B\bar p + 1)\big)
                + \text{const},

    with :math:`\alpha_k = e^{z_k} + c` and :math:`B = \hat\beta + K t`, the first term being the expected
    NLL of :math:`\bar p` under :math:`\mathrm{Dir}(\alpha)`. The unique
    stationary point is :math:`\alpha_k = B\bar p_k + 1`; with :math:`c = 1`, :math:`e^{z_k} = B\bar p_k`,
    i.e. :math:`\mathrm{softmax}(z) = \bar p` and :math:`\alpha_0 = \hat\beta + Kt + K`.

    Args:
        student_logits: ``[..., K]`` student logits ``z`` (float64/32, fp16 or bf16).
        stats: teacher statistics with leading shape ``[...]`` (:math:`\bar p`, MKL/EPKL).
        model_offset: ``c >= 0`` (recipes: 1).
        target_offset: ``t >= 0`` (recipes: 1), see :func:`~proxy_end2.uncertainty.proxy_target_precision`.
        precision: ``"mkl"`` or ``"epkl"`` estimate of :math:`\hat\beta`.
        eps: :math:`\varepsilon` of :math:`\hat\beta = (K-1)/(2\mathrm{MKL}+\varepsilon)`.

    Returns:
        ``[...]`` float64, not reduced and not masked. The gradient w.r.t. ``student_logits`` is analytic
        (see :func:`_proxy_chunk`) and comes back in the logits' dtype; none flows into ``stats``. It is
        computed in the forward, on the same chunks of rows as the value (when grad mode is on and the
        logits require grad), and saved as one ``[..., K]`` tensor in the logits' dtype (float32 for
        fp16/bf16 logits); the backward only multiplies it by the upstream gradient.

    Note:
        Everything is float64. The entropy uses the Stirling form of
        :func:`~proxy_end2.uncertainty.dirichlet_entropy` and the E-term
        :math:`\psi(\alpha_k) - \psi(\alpha_0) = \ln(\alpha_k/\alpha_0) + r(\alpha_k) - r(\alpha_0)`, so
        the value has an absolute error of about ``1e-16 * K * ln(alpha_0) / B`` plus
        ``1e-16 * ln(alpha_0)``, also for :math:`\alpha_0 \gg B` (large student logits), where the textbook
        ``lgamma`` form is off by :math:`10^{-16}\alpha_0\ln\alpha_0 / B`. Logits are clamped as in
        :func:`~proxy_end2.uncertainty.dirichlet_concentrations` (float64 bounds, inactive for
        ``|z| < 354``). Finite logits and finite statistics give finite values and gradients. For
        ``model_offset >= 1`` the gradient is bounded, :math:`|\partial C/\partial z_k| \le 2.3 +
        1.3 (K + 2)/B`, whatever the logits (each term of :func:`_proxy_chunk`'s gradient times :math:`e^{z_k}` is
        bounded, using :math:`x\psi'(x+1) < 1` and :math:`x\psi'(x) \le \pi^2/6` for :math:`x \ge 1`),
        so fp16 logits are safe.

    Raises:
        ValueError: on shape/class mismatches, bad ``precision``, negative offsets or ``eps <= 0``.
    """
    _check_student_stats(student_logits, stats)
    _check_model_offset(model_offset)
    target_precision = proxy_target_precision(stats, precision=precision, target_offset=target_offset, eps=eps)
    return _proxy_loss_given_precision(student_logits, stats.log_mean_probs, target_precision, model_offset)


def _proxy_loss_given_precision(
    student_logits: Tensor, log_mean_probs: Tensor, target_precision: Tensor, model_offset: float
) -> Tensor:
    """The proxy loss for an explicit ``B`` ``[...]`` (float64) instead of one estimated from statistics."""
    return _apply_rowwise(_proxy_chunk, student_logits, log_mean_probs, target_precision.detach(), float(model_offset))


def proxy_dirichlet_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    model_offset: float = 1.0,
    target_offset: float = 1.0,
    precision: str = "mkl",
    eps: float = _FLOAT32_EPS,
) -> Tensor:
    r"""Proxy-Dirichlet reverse-KL loss from stacked teacher logits.

    Equal to :func:`proxy_dirichlet_loss_from_stats` with ``ensemble_statistics(teacher_logits)``.

    Args:
        student_logits: ``[..., K]``.
        teacher_logits: ``[..., M, K]`` logits (or log-probs) of the ``M`` teachers.
        model_offset, target_offset, precision, eps: see :func:`proxy_dirichlet_loss_from_stats`.

    Returns:
        ``[...]`` float64 per-position loss, nats.
    """
    _check_student_teacher(student_logits, teacher_logits)
    return proxy_dirichlet_loss_from_stats(
        student_logits,
        ensemble_statistics(teacher_logits),
        model_offset=model_offset,
        target_offset=target_offset,
        precision=precision,
        eps=eps,
    )


# ------------------------------------------------------------------------------------------------------
# EnD^2: Dirichlet negative log-likelihood of the members
# ------------------------------------------------------------------------------------------------------
def _nll_chunk(
    logits: Tensor,
    mean_log_probs: Tensor,
    _: None,
    clamp: bool,
    index: Tensor | None,
    grad_out: Tensor | None,
    model_offset: float,
) -> Tensor:
    r"""EnD\ :sup:`2` value for a chunk of rows, float64 ``[n]``, and, into ``grad_out``, its gradient.

    Value: Stirling-form ``ln B(alpha)`` (see :func:`~proxy_end2.uncertainty.dirichlet_log_beta`) minus
    :math:`\sum_k (\alpha_k - 1) g_k` (``g = mean_m ln p_m``, with :math:`(\alpha_k - 1) g_k = 0` where
    :math:`\alpha_k = 1`),

    .. math::

        C = \sum_k \big[(\alpha_k - 1)(\ln\mu_k - g_k) + \tfrac12 \ln\mu_k + \phi(\alpha_k)\big]
            - \frac{K-1}{2}(\ln\alpha_0 - \ln 2\pi) - \phi(\alpha_0),

    grouped per class: the :math:`\alpha_k`-sized parts cancel inside each class instead of between two
    :math:`\alpha_0\ln\alpha_0`-sized sums. Gradient: :math:`\partial C/\partial z_k = e^{z_k}\,[\ln\mu_k
    - g_k + r(\alpha_k) - r(\alpha_0)]` (:math:`= e^{z_k}[\psi(\alpha_k) - \psi(\alpha_0) - g_k]`; 0 where
    the logit is clamped).
    """
    k = logits.shape[-1]
    c = model_offset
    lo, hi = concentration_bounds(k, torch.float64)
    e, inside = _exp_clamped(logits, lo, hi, clamp)  # [n, K]
    a0 = e.sum(-1, keepdim=True) + k * c  # [n, 1]
    alphas = e + c  # [n, K]
    log_alphas = torch.log(alphas)  # [n, K]
    with_grad = grad_out is not None
    r, phi2 = _remainders(alphas, log_alphas, index, with_r=with_grad)
    log_a0 = torch.log(a0)  # [n, 1]
    log_mu = log_alphas.sub_(log_a0)  # [n, K], ln(alpha_k / alpha_0)
    gap = mean_log_probs.to(torch.float64, copy=True)  # [n, K], g
    gap.masked_fill_(alphas == 1.0, 0.0)  # 0 * ln 0 = 0
    del alphas
    gap = torch.sub(log_mu, gap, out=gap)  # [n, K], ln mu_k - g_k
    per_class = phi2.addcmul_(e, gap).add_(log_mu, alpha=0.5)  # [n, K], + phi(a_k) + 1/2 ln 2 pi
    if c != 1.0:
        per_class.add_(gap, alpha=c - 1.0)
    value = (
        per_class.sum(-1, keepdim=True) - 0.5 * (k - 1) * log_a0 - 0.5 * _LN_2PI - _lgamma_stirling_remainder(a0)
    )  # [n, 1]
    del per_class, phi2, log_mu, log_alphas
    if with_grad:
        grad = gap.add_(r).sub_(_digamma_minus_log(a0))  # [n, K], psi(a_k) - psi(a_0) - g_k
        if inside is not None:
            grad.masked_fill_(~inside, 0.0)
        torch.mul(grad, e, out=grad_out)
    return value.squeeze(-1)  # [n]


def dirichlet_nll_loss_from_stats(
    student_logits: Tensor, stats: EnsembleStatistics, model_offset: float = 1.0
) -> Tensor:
    r"""EnD\ :sup:`2` loss: mean negative Dirichlet log-likelihood of the members' distributions, nats.

    .. math::

        C = \frac1M \sum_m -\ln \mathrm{Dir}(p_m \mid \alpha)
          = \sum_k \ln\Gamma(\alpha_k) - \ln\Gamma(\alpha_0)
            - \sum_k (\alpha_k - 1)\,\frac1M \sum_m \ln p_{mk},

    with :math:`\alpha = e^z + c`. Only :math:`\frac1M\sum_m \ln p_m` (``stats.mean_log_probs``) is needed.

    Args:
        student_logits: ``[..., K]``.
        stats: teacher statistics with leading shape ``[...]``.
        model_offset: ``c >= 0``.

    Returns:
        ``[...]`` float64. Analytic backward :math:`\partial C/\partial z_k = e^{z_k}[\psi(\alpha_k) -
        \psi(\alpha_0) - \frac1M\sum_m \ln p_{mk}]`, returned in the logits' dtype; as for the proxy
        loss only the logits and ``stats.mean_log_probs`` are saved, the passes run on chunks of rows, and
        no gradient flows into ``stats``.

    Note:
        No ``eps``: :math:`\ln p` comes from ``log_softmax`` and is finite for finite teacher logits (the
        authors add :math:`2^{-23}` to :math:`p`). :math:`\ln B(\alpha)` uses the Stirling form of
        :func:`~proxy_end2.uncertainty.dirichlet_log_beta`, grouped per class with the data term. At large
        :math:`\alpha_0` the loss itself is ill-conditioned: round-off of :math:`\ln\mu_k` and
        :math:`g_k` is amplified by :math:`\alpha_k`, so value and gradient are accurate to about
        :math:`\varepsilon_{64}\sum_k \alpha_k(|\ln\mu_k| + |g_k|)` absolute, no better (e.g. 3e-3 on
        a value of -56 at :math:`\alpha_0 = 10^{12}`). The gradient
        is :math:`\approx e^{z_k}\,|\ln p_k|` for classes the teachers rule out, e.g. ~1e8 for
        :math:`z = 15`: it overflows fp16 logits' gradients unless the loss scale is below 1 (the reason
        the paper replaces this loss).

    Raises:
        ValueError: on shape/class mismatches or a negative ``model_offset``.
    """
    _check_student_stats(student_logits, stats)
    _check_model_offset(model_offset)
    return _apply_rowwise(_nll_chunk, student_logits, stats.mean_log_probs, None, float(model_offset))


def dirichlet_nll_loss(student_logits: Tensor, teacher_logits: Tensor, model_offset: float = 1.0) -> Tensor:
    r"""EnD\ :sup:`2` loss from stacked teacher logits ``[..., M, K]``; see
    :func:`dirichlet_nll_loss_from_stats`. Returns ``[...]`` float64, nats."""
    _check_student_teacher(student_logits, teacher_logits)
    return dirichlet_nll_loss_from_stats(student_logits, ensemble_statistics(teacher_logits), model_offset)


# ------------------------------------------------------------------------------------------------------
# Classic ensemble distillation: forward KL to the mean
# ------------------------------------------------------------------------------------------------------
def ensemble_kl_loss_from_stats(student_logits: Tensor, stats: EnsembleStatistics) -> Tensor:
    r"""Forward KL from the ensemble mean to the student, nats.

    .. math::

        C = \mathrm{KL}(\bar p \,\|\, q) = \sum_k \bar p_k (\ln \bar p_k - \ln q_k), \qquad
        \ln q = \operatorname{log\_softmax}(z).

    Args:
        student_logits: ``[..., K]``.
        stats: teacher statistics with leading shape ``[...]``.

    Returns:
        ``[...]`` float32 (float64 if the student logits or the statistics are float64), ``>= 0``.

    Note:
        :math:`0 \ln 0 = 0` for classes with :math:`\bar p_k = 0`. Round-off can make the sum slightly
        negative near :math:`q = \bar p`; the value is clamped at 0 while the gradient stays that of the
        unclamped sum (``q - pbar`` up to normalisation), so training is unaffected.

    Raises:
        ValueError: on shape/class mismatches.
    """
    _check_student_stats(student_logits, stats)
    use_f64 = student_logits.dtype == torch.float64 or stats.log_mean_probs.dtype == torch.float64
    dtype = torch.float64 if use_f64 else torch.float32
    log_q = torch.log_softmax(student_logits.to(dtype), dim=-1)  # [..., K]
    log_pbar = stats.log_mean_probs.to(dtype)  # [..., K]
    support = log_pbar > -math.inf  # [..., K]
    log_pbar_safe = torch.where(support, log_pbar, torch.zeros_like(log_pbar))
    terms = torch.where(support, log_pbar.exp() * (log_pbar_safe - log_q), torch.zeros_like(log_q))  # [..., K]
    kl = terms.sum(-1)  # [...]
    return kl + (kl.clamp(min=0.0) - kl).detach()  # value clamped at 0, gradient of the plain sum


def ensemble_kl_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    r"""Forward :math:`\mathrm{KL}(\bar p \| \mathrm{softmax}(z))` from stacked teacher logits
    ``[..., M, K]``; see :func:`ensemble_kl_loss_from_stats`. Returns ``[...]``, nats."""
    _check_student_teacher(student_logits, teacher_logits)
    return ensemble_kl_loss_from_stats(student_logits, ensemble_statistics(teacher_logits))
