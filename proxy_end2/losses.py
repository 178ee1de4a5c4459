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
    _LN_2PI,
    _digamma_minus_log,
    _lgamma_stirling_remainder,
    _x_trigamma_minus_one,
    concentration_bounds,
)
from .uncertainty.ensemble import EnsembleStatistics, ensemble_statistics
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
# Float64 row-wise losses with analytic backward
# ------------------------------------------------------------------------------------------------------
_CHUNK_ELEMENTS = 1 << 24  # float64 temporaries are computed on <= 16M elements (128 MB) at a time


def _alphas_f64(logits: Tensor, model_offset: float) -> tuple[Tensor, Tensor, Tensor]:
    """``e = exp(clamped z)``, ``alpha = e + c`` ``[n, K]`` and ``alpha_0`` ``[n, 1]`` in float64, clamped
    like :func:`~proxy_end2.uncertainty.dirichlet_concentrations`."""
    lo, hi = concentration_bounds(logits.shape[-1], torch.float64)
    e = logits.to(torch.float64).clamp(min=lo, max=hi).exp()  # [n, K], exp(z_k) = alpha_k - c
    alphas = e + model_offset  # [n, K]
    return e, alphas, alphas.sum(-1, keepdim=True)


def _inside_clamp(logits: Tensor) -> Tensor:
    """``[n, K]`` bool: where the clamp of :func:`_alphas_f64` is inactive (its derivative is 1)."""
    lo, hi = concentration_bounds(logits.shape[-1], torch.float64)
    z = logits.to(torch.float64)
    return (z >= lo) & (z <= hi)


def _row_chunks(num_rows: int, num_classes: int) -> list[slice]:
    rows = max(1, _CHUNK_ELEMENTS // max(1, num_classes))
    return [slice(i, min(i + rows, num_rows)) for i in range(0, num_rows, rows)]


class _RowwiseLoss(torch.autograd.Function):
    """A per-position loss ``C(z; target)`` with an analytic backward, evaluated in float64 on chunks of rows.

    ``value_fn(z, target, extra, *scalars) -> [n]`` and ``grad_fn(z, target, extra, *scalars) -> [n, K]``
    (float64, ``dC/dz``) work on chunks of rows (``z``, ``target``: ``[n, K]``; ``extra``: ``[n]`` or None).
    Saved for backward: the student logits (input dtype), the teacher-side ``[..., K]`` target tensor that
    the statistics already hold and the optional ``[...]`` extra (e.g. the precision ``B``): no
    float64 ``[..., K]`` tensor outlives the forward, and the float64 temporaries of both passes are
    bounded by ``_CHUNK_ELEMENTS`` elements whatever ``prod(leading) * K`` is. No gradient flows to the
    teacher side (the target is a constant).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        value_fn: Callable[..., Tensor],
        grad_fn: Callable[..., Tensor],
        logits: Tensor,
        target: Tensor,
        row_extra: Tensor | None,
        *scalars: float,
    ) -> Tensor:
        ctx.save_for_backward(logits, target, row_extra)
        ctx.grad_fn, ctx.scalars = grad_fn, scalars
        k = logits.shape[-1]
        z, tgt = logits.reshape(-1, k), target.reshape(-1, k)  # [N, K]
        extra = None if row_extra is None else row_extra.reshape(-1)  # [N]
        value = torch.empty(z.shape[0], dtype=torch.float64, device=logits.device)  # [N]
        for rows in _row_chunks(z.shape[0], k):
            value[rows] = value_fn(z[rows], tgt[rows], None if extra is None else extra[rows], *scalars)
        return value.reshape(logits.shape[:-1])  # [...]

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor):  # type: ignore[override]
        logits, target, row_extra = ctx.saved_tensors
        no_grads = (None,) * (5 + len(ctx.scalars))
        if not ctx.needs_input_grad[2]:
            return no_grads
        k = logits.shape[-1]
        z, tgt = logits.reshape(-1, k), target.reshape(-1, k)  # [N, K]
        extra = None if row_extra is None else row_extra.reshape(-1)  # [N]
        upstream = grad_output.to(torch.float64).reshape(-1, 1)  # [N, 1]
        grad = torch.empty_like(z)  # [N, K], in the logits' dtype
        for rows in _row_chunks(z.shape[0], k):
            local = ctx.grad_fn(z[rows], tgt[rows], None if extra is None else extra[rows], *ctx.scalars)
            grad[rows] = (upstream[rows] * local).to(grad.dtype)
        return (None, None, grad.reshape(logits.shape)) + no_grads[3:]


# ------------------------------------------------------------------------------------------------------
# Proxy-Dirichlet reverse KL
# ------------------------------------------------------------------------------------------------------
def _proxy_terms(logits: Tensor, log_mean_probs: Tensor, model_offset: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shared float64 preparation of forward and backward: ``e``, ``alpha``, ``alpha_0`` and ``pbar``."""
    e, alphas, a0 = _alphas_f64(logits, model_offset)
    pbar = log_mean_probs.to(torch.float64).exp()  # [n, K]
    return e, alphas, a0, pbar


def _proxy_value(logits: Tensor, log_mean_probs: Tensor, precision: Tensor, model_offset: float) -> Tensor:
    r"""Forward value of the proxy loss for a chunk of rows, float64 ``[n]``; see
    :func:`proxy_dirichlet_loss_from_stats`."""
    k = logits.shape[-1]
    e, alphas, a0, pbar = _proxy_terms(logits, log_mean_probs, model_offset)
    log_a0 = torch.log(a0)  # [n, 1]
    log_mu = torch.log(alphas) - log_a0  # [n, K], ln(alpha_k / alpha_0)
    r_gap = _digamma_minus_log(alphas) - _digamma_minus_log(a0)  # [n, K], r(alpha_k) - r(alpha_0)
    # E-term: -sum_k pbar_k (psi(alpha_k) - psi(alpha_0)), with psi(x) = ln x + r(x)
    expected_nll = -(pbar * (log_mu + r_gap)).sum(-1)  # [n]
    # Dirichlet entropy in Stirling form (no alpha ln alpha terms, see dirichlet_entropy)
    entropy = (
        0.5 * log_mu.sum(-1)
        - 0.5 * (k - 1) * (log_a0.squeeze(-1) - _LN_2PI)
        + _lgamma_stirling_remainder(alphas).sum(-1)
        - _lgamma_stirling_remainder(a0).squeeze(-1)
        - ((e + (model_offset - 1.0)) * r_gap).sum(-1)  # (alpha_k - 1) (r_k - r_0)
    )  # [n]
    return expected_nll - entropy / precision  # [n]


def _proxy_grad(logits: Tensor, log_mean_probs: Tensor, precision: Tensor, model_offset: float) -> Tensor:
    r"""Analytic :math:`\partial C / \partial z` for a chunk of rows, float64 ``[n, K]``.

    With :math:`t(x) = x\psi'(x) - 1` the textbook gradient

    .. math::

        \frac{\partial C}{\partial \alpha_k} = \psi'(\alpha_k)\Big[\frac{\alpha_k - 1}{B} - \bar p_k\Big]
            - \psi'(\alpha_0)\Big[\frac{\alpha_0 - K}{B} - S\Big], \qquad S = \sum_k \bar p_k,

    is rewritten without its two :math:`O(1/B)` parts that cancel to :math:`O(1/(\alpha B))`
    (:math:`(\alpha-1)\psi'(\alpha) = 1 + t(\alpha) - \psi'(\alpha)`):

    .. math::

        \frac{\partial C}{\partial \alpha_k} = \frac{t(\alpha_k) - t(\alpha_0) - \psi'(\alpha_k)
            + K \psi'(\alpha_0)}{B} - \bar p_k \psi'(\alpha_k) + S\,\psi'(\alpha_0),

    and :math:`\partial\alpha_k/\partial z_k = e^{z_k}` (0 where the logit is clamped). ``S`` (1 up to
    float32 round-off) makes this the exact derivative of the computed forward value.
    """
    k = logits.shape[-1]
    e, alphas, a0, pbar = _proxy_terms(logits, log_mean_probs, model_offset)
    t = _x_trigamma_minus_one(alphas)  # [n, K]
    t0 = _x_trigamma_minus_one(a0)  # [n, 1]
    trigamma = (1.0 + t) / alphas  # [n, K], psi'(alpha_k)
    trigamma0 = (1.0 + t0) / a0  # [n, 1], psi'(alpha_0)
    mass = pbar.sum(-1, keepdim=True)  # [n, 1], S
    grad_alpha = (t - t0 - trigamma + k * trigamma0) / precision.unsqueeze(-1) - pbar * trigamma + mass * trigamma0
    return torch.where(_inside_clamp(logits), e * grad_alpha, torch.zeros_like(grad_alpha))  # [n, K]


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
        (see :func:`_proxy_grad`) and comes back in the logits' dtype; none flows into ``stats``.

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
        1.3 (K + 2)/B`, whatever the logits (each term of :func:`_proxy_grad` times :math:`e^{z_k}` is
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
    return _RowwiseLoss.apply(
        _proxy_value, _proxy_grad, student_logits, log_mean_probs, target_precision.detach(), float(model_offset)
    )


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
def _nll_terms(logits: Tensor, mean_log_probs: Tensor, model_offset: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``e = exp(clamped z)``, ``alpha``, ``alpha_0`` (keepdim) and ``g = mean_m ln p_m`` with
    ``(alpha_k - 1) g_k = 0`` where ``alpha_k = 1`` (float64, ``[n, K]``)."""
    e, alphas, a0 = _alphas_f64(logits, model_offset)
    g = mean_log_probs.to(torch.float64)  # [n, K]
    g = torch.where(alphas == 1.0, torch.zeros_like(g), g)  # 0 * ln 0 = 0
    return e, alphas, a0, g


def _nll_value(logits: Tensor, mean_log_probs: Tensor, _: None, model_offset: float) -> Tensor:
    r"""EnD\ :sup:`2` value for a chunk of rows, float64 ``[n]``: Stirling-form ``ln B(alpha)`` (see
    :func:`~proxy_end2.uncertainty.dirichlet_log_beta`) minus :math:`\sum_k (\alpha_k - 1) g_k`,

    .. math::

        C = \sum_k \big[(\alpha_k - 1)(\ln\mu_k - g_k) + \tfrac12 \ln\mu_k\big]
            - \frac{K-1}{2}(\ln\alpha_0 - \ln 2\pi) + \sum_k \phi(\alpha_k) - \phi(\alpha_0).
    """
    k = logits.shape[-1]
    e, alphas, a0, g = _nll_terms(logits, mean_log_probs, model_offset)
    log_a0 = torch.log(a0)  # [n, 1]
    log_mu = torch.log(alphas) - log_a0  # [n, K]
    # (alpha_k - 1/2) ln mu_k - (alpha_k - 1) g_k, grouped per class: the alpha_k-sized parts cancel
    # inside each class instead of between two alpha_0 ln alpha_0-sized sums
    per_class = (e + (model_offset - 1.0)) * (log_mu - g) + 0.5 * log_mu  # [n, K]
    return (
        per_class.sum(-1)
        - 0.5 * (k - 1) * (log_a0.squeeze(-1) - _LN_2PI)
        + _lgamma_stirling_remainder(alphas).sum(-1)
        - _lgamma_stirling_remainder(a0).squeeze(-1)
    )  # [n]


def _nll_grad(logits: Tensor, mean_log_probs: Tensor, _: None, model_offset: float) -> Tensor:
    r""":math:`\partial C/\partial z_k = e^{z_k}\,[\psi(\alpha_k) - \psi(\alpha_0) - g_k]`, with
    :math:`\psi(\alpha_k) - \psi(\alpha_0) = \ln(\alpha_k/\alpha_0) + r(\alpha_k) - r(\alpha_0)`
    (float64 ``[n, K]``; 0 where the logit is clamped)."""
    e, alphas, a0, g = _nll_terms(logits, mean_log_probs, model_offset)
    digamma_gap = torch.log(alphas) - torch.log(a0) + _digamma_minus_log(alphas) - _digamma_minus_log(a0)
    return torch.where(_inside_clamp(logits), e * (digamma_gap - g), torch.zeros_like(e))  # [n, K]


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
    return _RowwiseLoss.apply(_nll_value, _nll_grad, student_logits, stats.mean_log_probs, None, float(model_offset))


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
