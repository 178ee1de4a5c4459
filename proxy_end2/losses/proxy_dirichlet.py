r"""The Proxy-Dirichlet reverse-KL loss (Ryabinin, Malinin & Gales, NeurIPS 2021): the method of this package.

Per position, with :math:`\alpha = e^z + c` and the ensemble's mean :math:`\bar p` and target precision
:math:`B`: :math:`C = -\sum_k \bar p_k[\psi(\alpha_k) - \psi(\alpha_0)] - \mathcal{H}[\mathrm{Dir}(\alpha)]/B`,
computed in float64 on chunks of rows with its analytic gradient (:mod:`._rowwise`). Pure torch.

How one chunk is computed (:func:`_proxy_chunk`)
-----------------------------------------------
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
from __future__ import annotations

import torch
from torch import Tensor

from ..uncertainty._numerics import (
    FLOAT32_EPS,
    LN_2PI,
    asymptotic_series,
    digamma_minus_log,
    lgamma_stirling_remainder,
    x_trigamma_minus_one,
)
from ..uncertainty.dirichlet import concentration_bounds
from ..uncertainty.ensemble import EnsembleStatistics, ensemble_statistics
from ..uncertainty.proxy import proxy_target_precision
from ..uncertainty.topk import TopKStatistics
from ._checks import check_model_offset, check_student_stats, check_student_target, check_student_teacher
from ._rowwise import apply_rowwise, exp_clamped

__all__ = ["proxy_dirichlet_loss", "proxy_dirichlet_loss_from_stats", "proxy_dirichlet_loss_from_target"]


def _class_terms(
    alphas: Tensor, e: Tensor, c: float, index: Tensor | None, with_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    r"""Per-class terms of the proxy loss on a chunk ``[n, K]`` (float64): :math:`\psi(a_k)`, the entropy class
    term :math:`h_k = \tfrac12\ln a_k + \phi(a_k) + \tfrac12\ln 2\pi - (a_k - 1) r(a_k)` and, if ``with_grad``,
    :math:`\psi'(a_k)` and :math:`t(a_k) - \psi'(a_k)`. ``e`` is :math:`e^{z}` (so :math:`a - 1 = e + c - 1`);
    ``index``: the flat indices of the elements with :math:`a_k \ge 10`, which take the asymptotic series."""
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
        r_big, phi_big, t_big = asymptotic_series(big, with_grad)
        log_big = torch.log(big)
        psi.view(-1).index_copy_(0, index, log_big + r_big)
        h_big = (0.5 * log_big + phi_big + 0.5 * LN_2PI).addcmul_(big_e + (c - 1.0), r_big, value=-1.0)
        h.view(-1).index_copy_(0, index, h_big)
        if with_grad:
            trigamma_big = (1.0 + t_big) / big
            trigamma.view(-1).index_copy_(0, index, trigamma_big)
            t_minus.view(-1).index_copy_(0, index, t_big.sub_(trigamma_big))
    return psi, h, trigamma, t_minus


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

    The formulas and why they are arranged this way: the module docstring.
    """
    k = logits.shape[-1]
    c = model_offset
    lo, hi = concentration_bounds(k, torch.float64)
    e, inside = exp_clamped(logits, lo, hi, clamp)  # [n, K], exp(z_k) = alpha_k - c
    sum_e = e.sum(-1, keepdim=True)  # [n, 1]
    a0 = sum_e + k * c  # [n, 1]
    alphas = e + c  # [n, K]
    with_grad = grad_out is not None
    psi, h, trigamma, t_minus = _class_terms(alphas, e, c, index, with_grad)
    del alphas
    h_sum = h.sum(-1, keepdim=True)  # [n, 1]
    del h
    pbar = log_mean_probs.to(torch.float64, copy=True).exp_()  # [n, K]
    mass = pbar.sum(-1, keepdim=True)  # [n, 1], S
    psi_sum = psi.mul_(pbar).sum(-1, keepdim=True)  # [n, 1], sum_k pbar_k psi(a_k)
    del psi
    log_a0 = torch.log(a0)  # [n, 1]
    r0 = digamma_minus_log(a0)  # [n, 1]
    expected_nll = mass * (log_a0 + r0) - psi_sum  # [n, 1]
    entropy = (
        h_sum
        - (k - 0.5) * log_a0
        - 0.5 * LN_2PI
        - lgamma_stirling_remainder(a0)
        + (sum_e + k * (c - 1.0)) * r0
    )  # [n, 1]
    bcol = precision.to(torch.float64).unsqueeze(-1)  # [n, 1]
    if with_grad:
        t0 = x_trigamma_minus_one(a0)  # [n, 1]
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
    stats: EnsembleStatistics | TopKStatistics,
    model_offset: float = 1.0,
    target_offset: float = 1.0,
    precision: str = "mkl",
    eps: float = FLOAT32_EPS,
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
        stats: teacher statistics with leading shape ``[...]`` (:math:`\bar p`, MKL/EPKL), or their top-k
            compression (a teacher cache), whose mean is read as :math:`\tilde p`, the top-k classes plus the
            tail mass spread evenly over the other classes (:mod:`proxy_end2.uncertainty.topk`), densified
            one row chunk at a time; the precision :math:`B` is exact either way (the cache keeps MKL/EPKL).
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
    check_student_stats(student_logits, stats)
    check_model_offset(model_offset)
    target_precision = proxy_target_precision(stats, precision=precision, target_offset=target_offset, eps=eps)
    if isinstance(stats, TopKStatistics):  # the dense mean is built chunk by chunk, never for the whole batch
        return apply_rowwise(_proxy_chunk, student_logits, stats.dense_log_mean_probs, target_precision.detach(),
                             float(model_offset))
    return proxy_dirichlet_loss_from_target(student_logits, stats.log_mean_probs, target_precision, model_offset)


def proxy_dirichlet_loss_from_target(
    student_logits: Tensor, log_mean_probs: Tensor, target_precision: Tensor, model_offset: float = 1.0
) -> Tensor:
    r"""The proxy loss for an explicit target: mean :math:`\ln\bar p` ``[..., K]`` and precision :math:`B`
    ``[...]`` (float64; e.g. from :func:`~proxy_end2.uncertainty.proxy_target_precision`) instead of
    ensemble statistics. Same value, gradient and numerics as :func:`proxy_dirichlet_loss_from_stats`.

    Raises:
        ValueError: on shape/class mismatches or a negative ``model_offset``.
    """
    check_student_target(student_logits, log_mean_probs, target_precision)
    check_model_offset(model_offset)
    return apply_rowwise(_proxy_chunk, student_logits, log_mean_probs, target_precision.detach(), float(model_offset))


def proxy_dirichlet_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    model_offset: float = 1.0,
    target_offset: float = 1.0,
    precision: str = "mkl",
    eps: float = FLOAT32_EPS,
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
    check_student_teacher(student_logits, teacher_logits)
    return proxy_dirichlet_loss_from_stats(
        student_logits,
        ensemble_statistics(teacher_logits),
        model_offset=model_offset,
        target_offset=target_offset,
        precision=precision,
        eps=eps,
    )
