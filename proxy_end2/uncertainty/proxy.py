r"""The Proxy-Dirichlet target of Ryabinin, Malinin & Gales (NeurIPS 2021): precision estimate of the
ensemble.

Pure torch (no fairseq). For an ensemble with mean :math:`\bar p` the proxy target is the Dirichlet with
mean :math:`\bar p` whose precision matches the ensemble's spread by moments: a Dirichlet has
:math:`\mathrm{EPKL} = (K-1)/\alpha_0` exactly and, for large :math:`\alpha_k`
(:math:`\psi(x) \approx \ln x - 1/(2x)`), :math:`\mathbb{E}_{\mathrm{Dir}}\mathrm{KL}(\mu\|\pi) \approx
(K-1)/(2\alpha_0)`, hence

.. math::

    \hat\beta = \frac{K - 1}{2\,\mathrm{MKL} + \varepsilon} \quad(\texttt{"mkl"}), \qquad
    \hat\beta = \frac{K - 1}{\mathrm{EPKL} + \varepsilon} \quad(\texttt{"epkl"}).

References:
    Ryabinin, Malinin & Gales, "Scaling Ensemble Distribution Distillation to Many Classes with Proxy
    Targets", NeurIPS 2021, https://arxiv.org/abs/2105.06987, section 4.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._numerics import FLOAT32_EPS
from .ensemble import EnsembleStatistics

__all__ = ["PRECISION_CHOICES", "proxy_precision", "proxy_target_precision"]

PRECISION_CHOICES: tuple[str, ...] = ("mkl", "epkl")
"""Accepted values of the ``precision`` argument (``--target-concentration`` in the authors' code)."""

def proxy_precision(stats: EnsembleStatistics, precision: str = "mkl", eps: float = FLOAT32_EPS) -> Tensor:
    r"""Precision :math:`\hat\beta` of the ensemble, ``[...]``, float64.

    .. math::

        \hat\beta = \frac{K - 1}{2\,\mathrm{MKL} + \varepsilon} \;(\texttt{"mkl"})
        \quad\text{or}\quad \frac{K - 1}{\mathrm{EPKL} + \varepsilon} \;(\texttt{"epkl"}).

    Args:
        stats: ensemble statistics with leading shape ``[...]`` and ``K >= 2`` classes.
        precision: ``"mkl"`` (the paper's default) or ``"epkl"``.
        eps: :math:`\varepsilon > 0`, default the float32 machine epsilon :math:`2^{-23}` as in the authors'
            code.

    Returns:
        ``[...]`` float64 tensor in :math:`(0, (K-1)/\varepsilon]`.

    Note:
        :math:`\varepsilon` is the only guard: identical members (MKL = 0) give
        :math:`\hat\beta = (K-1)/\varepsilon \approx 3.4 \cdot 10^{11}` for ``K = 40000``. With float32
        statistics the round-off floor of MKL (up to :math:`2^{-24} M (\mathcal{H}[\bar p] + 1)`, see
        :class:`~proxy_end2.uncertainty.EnsembleStatistics`) and of EPKL is of the order of
        :math:`\varepsilon` itself, so :math:`\hat\beta` of (near-)identical members can come out up to
        an order of magnitude below :math:`(K-1)/\varepsilon` (the authors' float32 code shares this);
        float64 statistics give :math:`(K-1)/\varepsilon` to ~1e-8. An infinite MKL (a member assigns
        exactly zero probability, which needs a ``-inf`` logit) gives :math:`\hat\beta = 0`.

    Raises:
        ValueError: for an unknown ``precision``, ``eps <= 0`` or ``K < 2``.
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if not (math.isfinite(eps) and eps > 0.0):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    k = stats.num_classes
    if k < 2:
        raise ValueError(f"the proxy precision needs K >= 2 classes, got K = {k}")
    if precision == "mkl":
        spread = 2.0 * stats.mkl().to(torch.float64)  # [...]
    else:
        spread = stats.epkl().to(torch.float64)  # [...]
    return (k - 1) / (spread + eps)  # [...]


def proxy_target_precision(
    stats: EnsembleStatistics,
    precision: str = "mkl",
    target_offset: float = 1.0,
    eps: float = FLOAT32_EPS,
) -> Tensor:
    r"""Precision :math:`B` used by the Proxy-Dirichlet losses, ``[...]``, float64.

    .. math::

        B = \hat\beta + K t, \qquad t = \text{target\_offset}.

    With this :math:`B` the reverse-KL proxy loss has its minimum at :math:`\alpha_k = B \bar p_k + 1`
    (see :func:`proxy_end2.losses.proxy_dirichlet_loss`), i.e. the effective target is
    :math:`\mathrm{Dir}(B\bar p + 1)`, as in the authors' code (which adds :math:`Kt` in place to the
    precision). ``target_offset = 0`` gives the textbook target :math:`\mathrm{Dir}(\hat\beta\bar p + 1)`.

    Args:
        stats: ensemble statistics, ``K >= 2``.
        precision: ``"mkl"`` or ``"epkl"``, see :func:`proxy_precision`.
        target_offset: :math:`t \ge 0` (recipes: 1).
        eps: see :func:`proxy_precision`.

    Returns:
        ``[...]`` float64.

    Raises:
        ValueError: for a negative or non-finite ``target_offset`` and the errors of :func:`proxy_precision`.
    """
    if not (math.isfinite(target_offset) and target_offset >= 0.0):
        raise ValueError(f"target_offset must be a finite number >= 0, got {target_offset}")
    return proxy_precision(stats, precision=precision, eps=eps) + stats.num_classes * target_offset
