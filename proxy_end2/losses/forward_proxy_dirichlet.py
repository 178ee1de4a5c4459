r"""The forward-KL Proxy-Dirichlet loss: :math:`\mathrm{KL}(\mathrm{Dir}(\beta) \,\|\, \mathrm{Dir}(\alpha))`, the
baseline of Ryabinin, Malinin & Gales (NeurIPS 2021) that fits the student's Dirichlet to the proxy target with
the *forward* KL divergence. Float64, with an analytic gradient (:mod:`._rowwise`). Pure torch.

Target
------
The same Dirichlet as the reverse loss (:mod:`.proxy_dirichlet`) has at its minimum:

.. math::

    \beta_k = B\,\bar p_k + 1, \qquad B = \hat\beta + K t, \qquad
    \hat\beta = \frac{K - 1}{2\,\mathrm{MKL} + \varepsilon} \;(\text{or } \tfrac{K-1}{\mathrm{EPKL} + \varepsilon}),

(:func:`~proxy_end2.uncertainty.proxy_target_precision`), so that with equal options the two losses have the
same minimiser :math:`\alpha = \beta` and differ only in the direction of the KL. The authors' forward
criterion builds its target as :math:`\beta_k = \hat\beta\bar p_k + t`; with their recipes' :math:`t = 1`
that is :math:`\mathrm{Dir}(\hat\beta\bar p + 1)`, which is this loss with ``target_offset = 0``.

How one chunk is computed (:func:`_forward_chunk`)
--------------------------------------------------
With :math:`\mu = \beta/\beta_0`, :math:`\nu = \alpha/\alpha_0`, the Stirling remainders
:math:`\phi = \ln\Gamma - [(x - \tfrac12)\ln x - x + \tfrac12\ln 2\pi]` and :math:`r = \psi - \ln`
(``uncertainty/_numerics.py``), the KL of :func:`~proxy_end2.uncertainty.dirichlet_kl` grouped per class is

.. math::

    C = \sum_k \Big[(\alpha_k - \tfrac12)\,d_k + \phi(\alpha_k) - \phi(\beta_k)
        + (\beta_k - \alpha_k)\big(r(\beta_k) - r(\beta_0)\big)\Big]
        - \frac{K - 1}{2}\ln\frac{\alpha_0}{\beta_0} - \phi(\alpha_0) + \phi(\beta_0),
    \qquad d_k = \ln\frac{\alpha_k}{\beta_k} - \ln\frac{\alpha_0}{\beta_0} = \ln\frac{\nu_k}{\mu_k},

so no :math:`\alpha\ln\alpha`-sized terms are formed (the textbook ``lgamma`` form cancels them, losing every
digit at :math:`\beta_0 \sim 10^{11}`). :math:`d_k` is computed from the ratios :math:`\alpha_k/\beta_k` and
:math:`\alpha_0/\beta_0`, whose logarithms are accurate to float64 round-off in absolute terms. The gradient is

.. math::

    \frac{\partial C}{\partial z_k} = e^{z_k}\big[\psi(\alpha_k) - \psi(\alpha_0) - \psi(\beta_k) + \psi(\beta_0)\big]
    = e^{z_k}\big[d_k + r(\alpha_k) - r(\alpha_0) - r(\beta_k) + r(\beta_0)\big]

(0 where the logit is clamped). It vanishes exactly at :math:`\alpha = \beta`.

Conditioning: the loss is the forward KL in nats, not divided by :math:`B`. The class terms
:math:`(\alpha_k - \frac12) d_k` carry the float64 round-off of :math:`d_k` times :math:`\alpha_k`, so value and
gradient are accurate to about :math:`\varepsilon_{64}\sum_k \alpha_k` absolute, no better (the loss itself
is that ill-conditioned; tests/losses/test_forward_proxy_dirichlet.py measures it against mpmath). With
agreeing teachers (:math:`B \sim 10^{11}`) the gradient is :math:`\sim\alpha_k` times the mismatch of the
log-means: much larger than the reverse loss's, whose gradient is bounded (the paper's reason to prefer the
reverse KL).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..uncertainty._numerics import FLOAT32_EPS, digamma_minus_log, lgamma_stirling_remainder
from ..uncertainty.dirichlet import concentration_bounds
from ..uncertainty.ensemble import EnsembleStatistics, ensemble_statistics
from ..uncertainty.proxy import proxy_target_precision
from ._checks import check_model_offset, check_student_stats, check_student_target, check_student_teacher
from ._rowwise import apply_rowwise, exp_clamped

__all__ = [
    "forward_proxy_dirichlet_loss",
    "forward_proxy_dirichlet_loss_from_stats",
    "forward_proxy_dirichlet_loss_from_target",
]


def _forward_chunk(
    logits: Tensor,
    log_mean_probs: Tensor,
    precision: Tensor,
    clamp: bool,
    index: Tensor | None,
    grad_out: Tensor | None,
    model_offset: float,
) -> Tensor:
    r"""Value (float64 ``[n]``) of :math:`\mathrm{KL}(\mathrm{Dir}(B\bar p + 1) \| \mathrm{Dir}(e^z + c))` for a
    chunk of rows and, into ``grad_out``, its analytic gradient. ``index`` (the elements with
    :math:`\alpha \ge 10`) is not used: the remainders of ``_numerics`` pick their branch themselves.

    The formulas: the module docstring.
    """
    k = logits.shape[-1]
    lo, hi = concentration_bounds(k, torch.float64)
    e, inside = exp_clamped(logits, lo, hi, clamp)  # [n, K], exp(z_k) = alpha_k - c
    alphas = e + model_offset  # [n, K]
    a0 = alphas.sum(-1, keepdim=True)  # [n, 1]
    bcol = precision.to(torch.float64).unsqueeze(-1)  # [n, 1], B
    betas = log_mean_probs.to(torch.float64, copy=True).exp_().mul_(bcol).add_(1.0)  # [n, K], B pbar + 1
    b0 = betas.sum(-1, keepdim=True)  # [n, 1], exactly sum_k beta_k
    log_ratio0 = torch.log(a0 / b0)  # [n, 1], ln(alpha_0 / beta_0)
    gap = torch.log(alphas / betas).sub_(log_ratio0)  # [n, K], d_k = ln(nu_k / mu_k)
    r_beta = digamma_minus_log(betas)  # [n, K]
    r_b0 = digamma_minus_log(b0)  # [n, 1]
    # (beta_k - alpha_k)(r(beta_k) - r(beta_0)) + (alpha_k - 1/2) d_k + phi(alpha_k) - phi(beta_k)
    per_class = torch.sub(betas, alphas).mul_(r_beta - r_b0)  # [n, K]
    per_class.addcmul_(alphas - 0.5, gap)
    per_class.add_(lgamma_stirling_remainder(alphas)).sub_(lgamma_stirling_remainder(betas))
    del betas
    value = (
        per_class.sum(-1, keepdim=True)
        - 0.5 * (k - 1) * log_ratio0
        - lgamma_stirling_remainder(a0)
        + lgamma_stirling_remainder(b0)
    )  # [n, 1]
    del per_class
    if grad_out is not None:
        # psi(alpha_k) - psi(alpha_0) - psi(beta_k) + psi(beta_0) = d_k + r(a_k) - r(a_0) - r(b_k) + r(b_0)
        grad = gap.add_(digamma_minus_log(alphas)).sub_(r_beta).add_(r_b0 - digamma_minus_log(a0))  # [n, K]
        if inside is not None:
            grad.masked_fill_(~inside, 0.0)
        torch.mul(grad, e, out=grad_out)  # dC/dz_k = e^{z_k} dC/d alpha_k
    return value.squeeze(-1)  # [n]


def forward_proxy_dirichlet_loss_from_target(
    student_logits: Tensor, log_mean_probs: Tensor, target_precision: Tensor, model_offset: float = 1.0
) -> Tensor:
    r"""Forward KL to an explicit proxy target, per position, nats:

    .. math::

        C = \mathrm{KL}\big(\mathrm{Dir}(B\bar p + 1) \,\|\, \mathrm{Dir}(\alpha)\big), \qquad \alpha_k = e^{z_k} + c.

    Args:
        student_logits: ``[..., K]`` logits ``z`` (float64/32, fp16 or bf16).
        log_mean_probs: ``[..., K]`` :math:`\ln\bar p` (the target's mean).
        target_precision: ``[...]`` :math:`B > 0` (e.g. :func:`~proxy_end2.uncertainty.proxy_target_precision`).
        model_offset: ``c >= 0``.

    Returns:
        ``[...]`` float64, ``>= 0`` up to round-off, not reduced and not masked. Analytic gradient
        :math:`\partial C/\partial z_k = e^{z_k}[\psi(\alpha_k) - \psi(\alpha_0) - \psi(\beta_k) + \psi(\beta_0)]`
        computed in the forward on row chunks and returned in the logits' dtype (no float64 ``[..., K]``
        tensor is kept); none flows into the target. Logits are clamped as in
        :func:`~proxy_end2.uncertainty.dirichlet_concentrations` (gradient 0 there); a logit at the upper
        bound (``z`` near 700) makes :math:`\alpha_0 \sim 10^{300}` and the value of order
        :math:`\alpha_0\ln\alpha_0`, up to ``inf``.

    Raises:
        ValueError: on shape/class mismatches or a negative ``model_offset``.
    """
    check_student_target(student_logits, log_mean_probs, target_precision)
    check_model_offset(model_offset)
    return apply_rowwise(
        _forward_chunk, student_logits, log_mean_probs, target_precision.detach(), float(model_offset)
    )


def forward_proxy_dirichlet_loss_from_stats(
    student_logits: Tensor,
    stats: EnsembleStatistics,
    model_offset: float = 1.0,
    target_offset: float = 1.0,
    precision: str = "mkl",
    eps: float = FLOAT32_EPS,
) -> Tensor:
    r"""Forward-KL Proxy-Dirichlet loss per position from teacher statistics, nats:
    :math:`\mathrm{KL}(\mathrm{Dir}(B\bar p + 1) \| \mathrm{Dir}(e^z + c))` with
    :math:`B = \hat\beta + K t` (the reverse loss's target, see the module docstring).

    Args:
        student_logits: ``[..., K]``.
        stats: teacher statistics with leading shape ``[...]``.
        model_offset: ``c >= 0`` (recipes: 1).
        target_offset: ``t >= 0`` (1: the same target as ``proxy_dirichlet_loss``'s default; 0: the authors'
            forward criterion with their ``--target-offset 1``).
        precision: ``"mkl"`` or ``"epkl"`` estimate of :math:`\hat\beta`.
        eps: :math:`\varepsilon` of :math:`\hat\beta`.

    Returns:
        ``[...]`` float64; see :func:`forward_proxy_dirichlet_loss_from_target`.

    Raises:
        ValueError: on shape/class mismatches, bad ``precision``, negative offsets or ``eps <= 0``.
    """
    check_student_stats(student_logits, stats)
    check_model_offset(model_offset)
    target_precision = proxy_target_precision(stats, precision=precision, target_offset=target_offset, eps=eps)
    return forward_proxy_dirichlet_loss_from_target(student_logits, stats.log_mean_probs, target_precision,
                                                    model_offset)


def forward_proxy_dirichlet_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    model_offset: float = 1.0,
    target_offset: float = 1.0,
    precision: str = "mkl",
    eps: float = FLOAT32_EPS,
) -> Tensor:
    r"""Forward-KL Proxy-Dirichlet loss from stacked teacher logits ``[..., M, K]``; equal to
    :func:`forward_proxy_dirichlet_loss_from_stats` with ``ensemble_statistics(teacher_logits)``.
    Returns ``[...]`` float64, nats."""
    check_student_teacher(student_logits, teacher_logits)
    return forward_proxy_dirichlet_loss_from_stats(
        student_logits,
        ensemble_statistics(teacher_logits),
        model_offset=model_offset,
        target_offset=target_offset,
        precision=precision,
        eps=eps,
    )
