r"""Classic ensemble distillation (EnD, Hinton et al. 2015): forward KL from the ensemble mean to the student,
:math:`\mathrm{KL}(\bar p \,\|\, \mathrm{softmax}(z))`. Pure torch.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..uncertainty.ensemble import EnsembleStatistics, ensemble_statistics
from ._checks import check_student_stats, check_student_teacher

__all__ = ["ensemble_kl_loss", "ensemble_kl_loss_from_stats"]


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
    check_student_stats(student_logits, stats)
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
    check_student_teacher(student_logits, teacher_logits)
    return ensemble_kl_loss_from_stats(student_logits, ensemble_statistics(teacher_logits))
