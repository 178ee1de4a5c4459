r"""EnD\ :sup:`2` (Malinin, Mlodozeniec & Gales, ICLR 2020): the ensemble's mean negative Dirichlet
log-likelihood, :math:`C = \frac1M\sum_m -\ln\mathrm{Dir}(p_m \mid \alpha)`, float64 with an analytic gradient.

The baseline the Proxy-Dirichlet loss replaces when the number of classes is large. Pure torch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..uncertainty._numerics import LN_2PI, asymptotic_series, digamma_minus_log, lgamma_stirling_remainder
from ..uncertainty.dirichlet import concentration_bounds
from ..uncertainty.ensemble import EnsembleStatistics, ensemble_statistics
from ..uncertainty.topk import TopKStatistics
from ._checks import check_model_offset, check_student_stats, check_student_teacher
from ._rowwise import apply_rowwise, exp_clamped

__all__ = ["dirichlet_nll_loss", "dirichlet_nll_loss_from_stats"]


def _remainders(alphas: Tensor, log_alphas: Tensor, index: Tensor | None, with_r: bool):
    r"""Elementwise remainders of ``alphas`` ``[n, K]`` (float64, ``log_alphas`` = its log) for EnD\ :sup:`2`:
    ``r`` :math:`= \psi(\alpha) - \ln\alpha` (if ``with_r``) and ``phi2`` :math:`= \phi(\alpha) +
    \tfrac12\ln 2\pi = \ln\Gamma(\alpha) - (\alpha - \tfrac12)\ln\alpha + \alpha`, with the direct formulas of
    :mod:`proxy_end2.uncertainty.dirichlet` (``torch.digamma``/``lgamma``) where :math:`\alpha < 10` and the
    asymptotic series evaluated only on the elements of ``index`` (flat indices, :math:`\alpha \ge 10`, see
    :func:`~._rowwise.asymptotic_indices`); the direct values computed there are overwritten (they are finite).
    """
    r = torch.digamma(alphas).sub_(log_alphas) if with_r else None  # [n, K]
    shifted = alphas - 0.5
    phi2 = torch.lgamma(alphas).addcmul_(shifted, log_alphas, value=-1.0).add_(alphas)  # [n, K]
    del shifted
    if index is not None:
        big = alphas.view(-1).index_select(0, index)
        r_big, phi_big, _ = asymptotic_series(big, with_t=False)
        if with_r:
            r.view(-1).index_copy_(0, index, r_big)
        phi2.view(-1).index_copy_(0, index, phi_big.add_(0.5 * LN_2PI))
    return r, phi2


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
    e, inside = exp_clamped(logits, lo, hi, clamp)  # [n, K]
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
        per_class.sum(-1, keepdim=True) - 0.5 * (k - 1) * log_a0 - 0.5 * LN_2PI - lgamma_stirling_remainder(a0)
    )  # [n, 1]
    del per_class, phi2, log_mu, log_alphas
    if with_grad:
        grad = gap.add_(r).sub_(digamma_minus_log(a0))  # [n, K], psi(a_k) - psi(a_0) - g_k
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
        ValueError: on shape/class mismatches or a negative ``model_offset``, and for top-k statistics (a
            teacher cache), which do not hold the members' log-probabilities of every class.
    """
    if isinstance(stats, TopKStatistics):
        raise ValueError("EnD^2 (the Dirichlet NLL of the members' distributions) needs mean_m ln p_mk for every "
                         "class k, which top-k statistics (a teacher cache) do not keep: compute it from the full "
                         "ensemble statistics")
    check_student_stats(student_logits, stats)
    check_model_offset(model_offset)
    return apply_rowwise(_nll_chunk, student_logits, stats.mean_log_probs, None, float(model_offset))


def dirichlet_nll_loss(student_logits: Tensor, teacher_logits: Tensor, model_offset: float = 1.0) -> Tensor:
    r"""EnD\ :sup:`2` loss from stacked teacher logits ``[..., M, K]``; see
    :func:`dirichlet_nll_loss_from_stats`. Returns ``[...]`` float64, nats."""
    check_student_teacher(student_logits, teacher_logits)
    return dirichlet_nll_loss_from_stats(student_logits, ensemble_statistics(teacher_logits), model_offset)
