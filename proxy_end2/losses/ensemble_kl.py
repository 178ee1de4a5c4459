r"""Classic ensemble distillation (EnD, Hinton et al. 2015): forward KL from the ensemble mean to the student,
:math:`\mathrm{KL}(\bar p \,\|\, \mathrm{softmax}(z))`. Pure torch.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..uncertainty.ensemble import EnsembleStatistics, ensemble_statistics
from ..uncertainty.topk import TopKStatistics
from ._checks import check_student_stats, check_student_teacher

__all__ = ["ensemble_kl_loss", "ensemble_kl_loss_from_stats"]


def _topk_kl(student_logits: Tensor, stats: TopKStatistics, dtype: torch.dtype) -> Tensor:
    r""":math:`\mathrm{KL}(\tilde p \,\|\, q)` ``[...]`` for the top-k mean :math:`\tilde p` (top-k classes
    :math:`T`, the tail mass :math:`\tau` spread as :math:`u = \tau/(K-k)` over the others), in closed form:

    .. math::

        \sum_{j \in T} \bar p_j(\ln\bar p_j - \ln q_j) + \tau\ln u
        - u\Big(\sum_{k=1}^K \ln q_k - \sum_{j \in T}\ln q_j\Big), \qquad
        \sum_{k=1}^K \ln q_k = \sum_k z_k - K \operatorname{logsumexp}(z),

    so no ``[..., K]`` tensor of the teacher side is formed (:math:`\tau\ln u = 0` when :math:`\tau = 0`)."""
    z = student_logits.to(dtype)  # [..., K]
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # [..., 1]
    log_q_top = z.gather(-1, stats.topk_indices.long()) - lse  # [..., k]
    sum_log_q = torch.sum(student_logits, dim=-1, dtype=torch.float64).to(dtype) - stats.num_classes * lse.squeeze(-1)
    log_p_top = stats.topk_log_probs.to(dtype)  # [..., k]
    top = (log_p_top.exp() * (log_p_top - log_q_top)).sum(-1)  # [...]
    log_u = stats.tail_log_prob().to(dtype)  # [...]
    has_tail = log_u > -math.inf
    u = log_u.exp()  # [...], 0 without a tail
    tail = torch.where(has_tail, stats.tail_log_mass.to(dtype).exp() * log_u, torch.zeros_like(log_u))
    return top + tail - u * (sum_log_q - log_q_top.sum(-1))


def ensemble_kl_loss_from_stats(student_logits: Tensor, stats: EnsembleStatistics | TopKStatistics) -> Tensor:
    r"""Forward KL from the ensemble mean to the student, nats.

    .. math::

        C = \mathrm{KL}(\bar p \,\|\, q) = \sum_k \bar p_k (\ln \bar p_k - \ln q_k), \qquad
        \ln q = \operatorname{log\_softmax}(z).

    Args:
        student_logits: ``[..., K]``.
        stats: teacher statistics with leading shape ``[...]``, or their top-k compression (a teacher
            cache): then :math:`\bar p` is read as :math:`\tilde p` (top-k classes, the tail mass spread evenly
            over the others, :mod:`proxy_end2.uncertainty.topk`) and the KL is taken in closed form.

    Returns:
        ``[...]`` float32 (float64 if the student logits or the statistics are float64), ``>= 0``.

    Note:
        :math:`0 \ln 0 = 0` for classes with :math:`\bar p_k = 0`. Round-off can make the sum slightly
        negative near :math:`q = \bar p`; the value is clamped at 0 while the gradient stays that of the
        unclamped sum (``q - pbar`` up to normalisation), so training is unaffected.

    Raises:
        ValueError: on shape/class mismatches.
    """
    check_student_stats(student_logits, stats)
    teacher_dtype = stats.topk_log_probs.dtype if isinstance(stats, TopKStatistics) else stats.log_mean_probs.dtype
    use_f64 = student_logits.dtype == torch.float64 or teacher_dtype == torch.float64
    dtype = torch.float64 if use_f64 else torch.float32
    if isinstance(stats, TopKStatistics):
        kl = _topk_kl(student_logits, stats, dtype)  # [...]
        return kl + (kl.clamp(min=0.0) - kl).detach()
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
    check_student_teacher(student_logits, teacher_logits)
    return ensemble_kl_loss_from_stats(student_logits, ensemble_statistics(teacher_logits))
