r"""Dirichlet distributions over the probability simplex: parametrisation, entropy, KL, log-density and
closed-form uncertainty measures of a Prior Network.

Pure torch (no fairseq). Classes are on the last dimension ``[..., K]``; everything else is batch. Nats.

Notation: concentrations :math:`\alpha \in \mathbb{R}_{>0}^K`, precision :math:`\alpha_0 = \sum_k \alpha_k`,
mean :math:`\mu = \alpha / \alpha_0`, :math:`\psi` digamma, :math:`\psi'` trigamma,
:math:`\ln\Gamma` log-gamma, :math:`\ln B(\alpha) = \sum_k \ln\Gamma(\alpha_k) - \ln\Gamma(\alpha_0)`.

Numerics (why this module does not just call ``lgamma`` and ``digamma``): a Prior Network distilled from
agreeing teachers has :math:`\alpha_0 \sim 10^{11}`, and one with large logits far more. Then
:math:`\sum_k \ln\Gamma(\alpha_k)` and :math:`\ln\Gamma(\alpha_0)` are :math:`\sim \alpha_0 \ln \alpha_0`
while their combinations (entropy, KL, uncertainty measures) are :math:`O(K \ln \alpha_0)` or smaller,
so the textbook formulas lose everything to cancellation. Writing

.. math::

    \ln\Gamma(x) = (x - \tfrac12)\ln x - x + \tfrac12 \ln 2\pi + \phi(x), \qquad
    \psi(x) = \ln x + r(x),

the large parts cancel analytically and only the small remainders :math:`\phi(x) \approx 1/(12x)` and
:math:`r(x) \approx -1/(2x)` remain; they are evaluated directly for :math:`x < 10` and with their
asymptotic (Stirling / Bernoulli) series for :math:`x \ge 10`, to float64 round-off.

References:
    Malinin & Gales, "Predictive Uncertainty Estimation via Prior Networks", NeurIPS 2018,
    https://arxiv.org/abs/1802.10501.
    Ryabinin, Malinin & Gales, "Scaling Ensemble Distribution Distillation to Many Classes with Proxy
    Targets", NeurIPS 2021, https://arxiv.org/abs/2105.06987.
    Abramowitz & Stegun, Handbook of Mathematical Functions, 6.1.40-41 and 6.3.18, 6.4.12.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._numerics import (
    LN_2PI,
    digamma1p_minus_log,
    digamma_minus_log,
    lgamma_stirling_remainder,
)

__all__ = [
    "concentration_bounds",
    "dirichlet_concentrations",
    "dirichlet_entropy",
    "dirichlet_kl",
    "dirichlet_log_prob",
    "dirichlet_log_beta",
    "dirichlet_uncertainty",
]


# ------------------------------------------------------------------------------------------------------
# Parametrisation
# ------------------------------------------------------------------------------------------------------
def concentration_bounds(num_classes: int, dtype: torch.dtype) -> tuple[float, float]:
    r"""Range ``(lo, hi)`` to which :func:`dirichlet_concentrations` clamps the logits.

    .. math::

        \mathrm{lo} = \tfrac12 \ln(\mathrm{tiny}), \qquad \mathrm{hi} = \ln\frac{\mathrm{max}}{2K},

    with ``tiny``/``max`` from ``torch.finfo(dtype)``: ``hi`` keeps :math:`\alpha_0 \le \mathrm{max}/2 +
    Kc` finite; ``lo`` keeps :math:`\alpha \ge \sqrt{\mathrm{tiny}}` so that even with ``model_offset = 0``
    :math:`\psi'(\alpha) \approx \alpha^{-2}` is finite. float64: about ``(-354, 698 - ln K)``;
    float32: about ``(-43.7, 87.7 - ln 2K)``.
    """
    info = torch.finfo(dtype)
    return 0.5 * math.log(info.tiny), math.log(info.max / (2.0 * num_classes))


def dirichlet_concentrations(logits: Tensor, model_offset: float = 1.0, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""Concentrations of the Prior Network's Dirichlet from its logits.

    .. math::

        \alpha_k = e^{z_k} + c, \qquad c = \text{model\_offset} \ge 0.

    Args:
        logits: ``[..., K]`` student logits ``z`` (any floating dtype).
        model_offset: ``c``; 1 in the paper's recipes, 0 allowed.
        dtype: compute (and output) dtype; float64 by default because :math:`\alpha_0` reaches ``1e11``+.

    Returns:
        ``[..., K]`` concentrations in ``dtype``. Differentiable.

    Note:
        ``z`` is clamped to :func:`concentration_bounds` (gradient 0 outside) so that :math:`\alpha_0` is
        finite for any finite (or infinite) logits. In float64 the clamp only acts beyond ``|z| > 354``.

    Raises:
        ValueError: if ``model_offset`` is negative or not finite, or ``dtype`` is not floating point.
    """
    if not (math.isfinite(model_offset) and model_offset >= 0.0):
        raise ValueError(f"model_offset must be a finite number >= 0, got {model_offset}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
    if logits.dim() < 1:
        raise ValueError("logits must have a class dimension [..., K], got a 0-dim tensor")
    lo, hi = concentration_bounds(logits.shape[-1], dtype)
    z = logits.to(dtype).clamp(min=lo, max=hi)  # [..., K]
    return z.exp() + model_offset  # [..., K]


# ------------------------------------------------------------------------------------------------------
# Densities, entropy, KL
# ------------------------------------------------------------------------------------------------------
def _check_alphas(alphas: Tensor, name: str = "alphas") -> None:
    if not alphas.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got dtype {alphas.dtype}")
    if alphas.dim() < 1:
        raise ValueError(f"{name} must have a class dimension [..., K], got a 0-dim tensor")


def dirichlet_log_beta(alphas: Tensor) -> Tensor:
    r"""Log multivariate beta function, stable for huge concentrations.

    .. math::

        \ln B(\alpha) = \sum_k \ln\Gamma(\alpha_k) - \ln\Gamma(\alpha_0)
        = \sum_k (\alpha_k - \tfrac12)\ln\frac{\alpha_k}{\alpha_0} - \frac{K-1}{2}(\ln\alpha_0 - \ln 2\pi)
          + \sum_k \phi(\alpha_k) - \phi(\alpha_0).

    Args:
        alphas: ``[..., K]``, positive.

    Returns:
        ``[...]`` in the dtype of ``alphas``.
    """
    _check_alphas(alphas)
    k = alphas.shape[-1]
    a0 = alphas.sum(-1, keepdim=True)  # [..., 1]
    log_mu = torch.log(alphas) - torch.log(a0)  # [..., K]
    phi = lgamma_stirling_remainder(alphas).sum(-1) - lgamma_stirling_remainder(a0).squeeze(-1)  # [...]
    return ((alphas - 0.5) * log_mu).sum(-1) - 0.5 * (k - 1) * (torch.log(a0).squeeze(-1) - LN_2PI) + phi


def dirichlet_entropy(alphas: Tensor) -> Tensor:
    r"""Differential entropy of :math:`\mathrm{Dir}(\alpha)`, nats.

    .. math::

        \mathcal{H}[\mathrm{Dir}(\alpha)] &= \ln B(\alpha) - \sum_k (\alpha_k - 1)\,(\psi(\alpha_k) - \psi(\alpha_0)) \\
        &= \tfrac12 \sum_k \ln\frac{\alpha_k}{\alpha_0} - \frac{K-1}{2}(\ln\alpha_0 - \ln 2\pi)
           + \sum_k \phi(\alpha_k) - \phi(\alpha_0) - \sum_k (\alpha_k - 1)\,(r(\alpha_k) - r(\alpha_0)).

    The second line (Stirling, see the module docstring) has no :math:`\alpha \ln \alpha` terms, so it
    stays accurate to float64 round-off of :math:`O(K \ln\alpha_0)` at :math:`\alpha_0 \sim 10^{30}`,
    where the first loses all digits.

    Args:
        alphas: ``[..., K]`` positive concentrations (float64 recommended).

    Returns:
        ``[...]`` in the dtype of ``alphas``. Differentiable (autograd).
    """
    _check_alphas(alphas)
    k = alphas.shape[-1]
    a0 = alphas.sum(-1, keepdim=True)  # [..., 1]
    log_a0 = torch.log(a0)  # [..., 1]
    r_gap = digamma_minus_log(alphas) - digamma_minus_log(a0)  # [..., K], r(a_k) - r(a_0)
    return (
        0.5 * (torch.log(alphas) - log_a0).sum(-1)
        - 0.5 * (k - 1) * (log_a0.squeeze(-1) - LN_2PI)
        + lgamma_stirling_remainder(alphas).sum(-1)
        - lgamma_stirling_remainder(a0).squeeze(-1)
        - ((alphas - 1.0) * r_gap).sum(-1)
    )


def dirichlet_kl(alphas_p: Tensor, alphas_q: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathrm{Dir}(a) \,\|\, \mathrm{Dir}(b))`, nats.

    .. math::

        \mathrm{KL} &= \ln B(b) - \ln B(a) + \sum_k (a_k - b_k)(\psi(a_k) - \psi(a_0)) \\
        &= \sum_k (b_k - \tfrac12)\ln\frac{\nu_k}{\mu_k} - \frac{K-1}{2}\ln\frac{b_0}{a_0}
           + \Big[\sum_k \phi(b_k) - \phi(b_0) - \sum_k \phi(a_k) + \phi(a_0)\Big]
           + \sum_k (a_k - b_k)(r(a_k) - r(a_0)),

    with :math:`\mu = a/a_0`, :math:`\nu = b/b_0`. The second form cancels the :math:`a \ln a` terms
    analytically (accurate for precisions :math:`\sim 10^{11}` where the first loses ~6 digits).

    Args:
        alphas_p: ``[..., K]`` concentrations ``a`` of the first argument.
        alphas_q: ``[..., K]`` concentrations ``b`` (leading dims broadcast against ``a``).

    Returns:
        ``[...]`` (broadcast leading shape), promoted dtype. Differentiable.

    Raises:
        ValueError: if the class dimensions differ.
    """
    _check_alphas(alphas_p, "alphas_p")
    _check_alphas(alphas_q, "alphas_q")
    if alphas_p.shape[-1] != alphas_q.shape[-1]:
        raise ValueError(
            f"class dimension mismatch: alphas_p has K = {alphas_p.shape[-1]}, alphas_q has K = {alphas_q.shape[-1]}"
        )
    dtype = torch.promote_types(alphas_p.dtype, alphas_q.dtype)
    a, b = alphas_p.to(dtype), alphas_q.to(dtype)
    k = a.shape[-1]
    a0, b0 = a.sum(-1, keepdim=True), b.sum(-1, keepdim=True)  # [..., 1]
    log_a0, log_b0 = torch.log(a0), torch.log(b0)
    log_ratio = (torch.log(b) - log_b0) - (torch.log(a) - log_a0)  # [..., K], ln(nu_k / mu_k)
    phi = (
        lgamma_stirling_remainder(b).sum(-1)
        - lgamma_stirling_remainder(b0).squeeze(-1)
        - lgamma_stirling_remainder(a).sum(-1)
        + lgamma_stirling_remainder(a0).squeeze(-1)
    )
    r_gap = digamma_minus_log(a) - digamma_minus_log(a0)  # [..., K]
    return (
        ((b - 0.5) * log_ratio).sum(-1)
        - 0.5 * (k - 1) * (log_b0 - log_a0).squeeze(-1)
        + phi
        + ((a - b) * r_gap).sum(-1)
    )


def dirichlet_log_prob(log_probs: Tensor, alphas: Tensor) -> Tensor:
    r"""Log-density :math:`\ln \mathrm{Dir}(\pi \mid \alpha)` of a categorical given by its log-probs.

    .. math::

        \ln \mathrm{Dir}(\pi \mid \alpha) = \sum_k (\alpha_k - 1) \ln \pi_k - \ln B(\alpha).

    Args:
        log_probs: ``[..., K]`` :math:`\ln \pi` (e.g. ``log_softmax`` output: tiny probabilities are
            represented exactly, no ``eps`` is needed).
        alphas: ``[..., K]`` concentrations (leading dims broadcast).

    Returns:
        ``[...]``, promoted dtype of the inputs. Differentiable.

    Note:
        Uses :math:`(\alpha_k - 1) \ln \pi_k = 0` when :math:`\alpha_k = 1` even if :math:`\pi_k = 0`.

    Raises:
        ValueError: if the class dimensions differ.
    """
    _check_alphas(alphas)
    if log_probs.shape[-1] != alphas.shape[-1]:
        raise ValueError(
            f"class dimension mismatch: log_probs has K = {log_probs.shape[-1]}, alphas has K = {alphas.shape[-1]}"
        )
    dtype = torch.promote_types(log_probs.dtype, alphas.dtype)
    lp, a = log_probs.to(dtype), alphas.to(dtype)
    weight = a - 1.0  # [..., K]
    lp = torch.where(weight == 0, torch.zeros_like(lp), lp)  # 0 * ln 0 = 0
    return (weight * lp).sum(-1) - dirichlet_log_beta(a)


# ------------------------------------------------------------------------------------------------------
# Uncertainty of a Prior Network
# ------------------------------------------------------------------------------------------------------
def dirichlet_uncertainty(alphas: Tensor) -> dict[str, Tensor]:
    r"""Closed-form token-level uncertainty of :math:`\mathrm{Dir}(\alpha)`, :math:`\mu = \alpha/\alpha_0`.

    .. math::

        \text{entropy\_of\_expected} &= \mathcal{H}[\mu] = -\sum_k \mu_k \ln \mu_k \\
        \text{expected\_entropy} &= \mathbb{E}_{\mathrm{Dir}}\mathcal{H}[\pi]
            = -\sum_k \mu_k \big(\psi(\alpha_k + 1) - \psi(\alpha_0 + 1)\big) \\
        \text{mutual\_information} &= \mathcal{H}[\mu] - \mathbb{E}\mathcal{H}[\pi]
            = \sum_k \mu_k \big(s(\alpha_k) - s(\alpha_0)\big) \;\ge 0, \quad s(x) = \psi(x+1) - \ln x \\
        \text{mkl} &= \mathbb{E}_{\mathrm{Dir}}\mathrm{KL}(\mu \,\|\, \pi)
            = \sum_k \mu_k \big(\ln\mu_k - \psi(\alpha_k) + \psi(\alpha_0)\big)
            = \sum_k \mu_k \big(r(\alpha_0) - r(\alpha_k)\big) \;\ge 0 \\
        \text{epkl} &= \frac{K - 1}{\alpha_0}.

    **EPKL = MI + MKL exactly.** With :math:`\psi(x + 1) = \psi(x) + 1/x`,

    .. math::

        \mathrm{MI} + \mathrm{MKL} = \sum_k \mu_k\big[\psi(\alpha_k+1) - \psi(\alpha_k)
            - \psi(\alpha_0+1) + \psi(\alpha_0)\big]
        = \sum_k \frac{\alpha_k}{\alpha_0}\Big(\frac{1}{\alpha_k} - \frac{1}{\alpha_0}\Big)
        = \frac{K - 1}{\alpha_0}.

    The sign of MI is the correct one: the authors' code computes
    :math:`\sum_k \mu_k(\ln\mu_k - \psi(\alpha_k+1) + \psi(\alpha_0+1)) = -\mathrm{MI} \le 0` and then
    clamps it to 0.

    Args:
        alphas: ``[..., K]`` positive concentrations.

    Returns:
        dict with the keys of :data:`~proxy_end2.uncertainty.ensemble.UNCERTAINTY_KEYS`, each ``[...]`` in
        nats; computed in float64, returned in float64 for float64 input and float32 otherwise.

    Note:
        Written with :math:`r(x) = \psi(x) - \ln x` and :math:`s(x)`, which are both monotone
        (:math:`r` increasing, :math:`s` decreasing), each per-class term of MI and MKL is
        :math:`\ge 0` and stays accurate to relative round-off even at :math:`\alpha_0 \sim 10^{12}`, where
        the textbook differences of digammas :math:`\approx \ln\alpha` lose ~4 digits; terms are clamped at
        0 against round-off, and expected entropy = :math:`\mathcal{H}[\mu] - \mathrm{MI}` is clamped at 0.
        For :math:`\alpha_0 \ll 1` the expected entropy (:math:`\to 0`) is a difference of two
        :math:`O(\ln K)` numbers and is accurate to ~1e-16 absolute only.
    """
    _check_alphas(alphas)
    out_dtype = torch.float64 if alphas.dtype == torch.float64 else torch.float32
    a = alphas.to(torch.float64)  # [..., K]
    k = a.shape[-1]
    a0 = a.sum(-1, keepdim=True)  # [..., 1]
    mu = a / a0  # [..., K]
    log_mu = torch.log(a) - torch.log(a0)  # [..., K]
    entropy_of_expected = -(mu * log_mu).sum(-1)  # [...]
    mi_terms = (digamma1p_minus_log(a) - digamma1p_minus_log(a0)).clamp(min=0.0)  # [..., K]
    mkl_terms = (digamma_minus_log(a0) - digamma_minus_log(a)).clamp(min=0.0)  # [..., K]
    mutual_information = (mu * mi_terms).sum(-1)  # [...]
    mkl = (mu * mkl_terms).sum(-1)  # [...]
    out = {
        "entropy_of_expected": entropy_of_expected,
        "expected_entropy": (entropy_of_expected - mutual_information).clamp(min=0.0),
        "mutual_information": mutual_information,
        "epkl": (k - 1) / a0.squeeze(-1),
        "mkl": mkl,
    }
    return {name: value.to(out_dtype) for name, value in out.items()}
