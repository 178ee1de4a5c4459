r"""Top-k compression of ensemble statistics: what an offline teacher cache keeps per target position.

Pure torch (no fairseq). For one position with ensemble mean :math:`\bar p` over :math:`K` classes, a
:class:`TopKStatistics` keeps

* the :math:`k` most probable classes :math:`T` of :math:`\bar p` and their :math:`\ln\bar p_j`;
* the tail mass :math:`\tau = \sum_{k \notin T} \bar p_k`, as :math:`\ln\tau` computed by a logsumexp over
  the other classes (never as :math:`1 - \sum_T \bar p_j`, which cancels to nothing when the top-k hold
  almost all the mass);
* the exact scalar measures of the full ensemble: MKL, EPKL and the expected entropy, so that the proxy
  precision :math:`(K-1)/(2\,\mathrm{MKL} + \varepsilon)`, the mutual information
  :math:`\mathrm{EPKL} - \mathrm{MKL}` and :math:`\mathcal{H}[\bar p] = \mathrm{ExE} + \mathrm{MI}` are those
  of the ensemble, not approximations.

The losses read the mean as the distribution

.. math::

    \tilde p_j = \bar p_j \;(j \in T), \qquad \tilde p_k = u = \frac{\tau}{K - k} \;(k \notin T),

the tail spread evenly over the other :math:`K - k` classes: :math:`\sum_k \tilde p_k = 1` exactly,
:math:`\tilde p = \bar p` when the tail is uniform, and the error is confined to how the tail mass is
distributed, so the approximation is only as good as :math:`\tau` is small
(``benchmarks/teacher_cache_approximation.py`` measures it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._numerics import row_slices
from .ensemble import EnsembleStatistics

__all__ = ["TopKStatistics", "topk_statistics"]


@dataclass(frozen=True, eq=False)
class TopKStatistics:
    r"""Top-k of the ensemble mean, its tail mass and the exact scalar measures, per position.

    Attributes:
        topk_indices: ``[..., k]`` integer class indices of the :math:`k` largest :math:`\bar p_j`.
        topk_log_probs: ``[..., k]`` :math:`\ln\bar p_j` at those classes (float).
        tail_log_mass: ``[...]`` :math:`\ln\tau = \ln\sum_{k\notin T}\bar p_k` (``-inf`` when the tail is
            empty or has no mass).
        mkl_values: ``[...]`` MKL of the full ensemble (nats).
        epkl_values: ``[...]`` EPKL of the full ensemble (nats).
        expected_entropy: ``[...]`` expected entropy of the members (nats).
        num_classes: ``K``.
        num_members: ``M``.

    Same interface as :class:`~proxy_end2.uncertainty.EnsembleStatistics` where the losses, the proxy
    precision and the criteria's logging need it (``num_classes``, ``leading_shape``, ``mkl()``, ``epkl()``,
    ``mutual_information()``, ``entropy_of_expected()``, ``uncertainty()``, ``select()``); the dense mean
    comes from :meth:`dense_log_mean_probs`.

    Raises:
        ValueError: on inconsistent shapes, ``k`` outside ``[1, K]``, non-integer indices or ``M < 1``.
    """

    topk_indices: Tensor  # [..., k]
    topk_log_probs: Tensor  # [..., k]
    tail_log_mass: Tensor  # [...]
    mkl_values: Tensor  # [...]
    epkl_values: Tensor  # [...]
    expected_entropy: Tensor  # [...]
    num_classes: int
    num_members: int

    def __post_init__(self) -> None:
        if self.num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {self.num_members}")
        if self.topk_indices.dim() < 1 or self.topk_indices.shape != self.topk_log_probs.shape:
            raise ValueError(f"top-k indices {tuple(self.topk_indices.shape)} and log-probabilities "
                             f"{tuple(self.topk_log_probs.shape)} must have one shape [..., k]")
        if self.topk_indices.is_floating_point() or self.topk_indices.dtype == torch.bool:
            raise ValueError(f"top-k indices must be an integer tensor, got {self.topk_indices.dtype}")
        if not 1 <= self.topk <= self.num_classes:
            raise ValueError(f"k = {self.topk} must be in [1, K = {self.num_classes}]")
        for name in ("tail_log_mass", "mkl_values", "epkl_values", "expected_entropy"):
            if getattr(self, name).shape != self.leading_shape:
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected the leading "
                                 f"shape {tuple(self.leading_shape)} of the top-k tensors")

    @property
    def topk(self) -> int:
        """``k``, the number of classes kept per position."""
        return self.topk_indices.shape[-1]

    @property
    def leading_shape(self) -> torch.Size:
        """The batch shape ``[...]`` in front of the top-k dimension."""
        return self.topk_indices.shape[:-1]

    def mkl(self) -> Tensor:
        """MKL of the full ensemble, ``[...]`` (a copy)."""
        return self.mkl_values.clone()

    def epkl(self) -> Tensor:
        """EPKL of the full ensemble, ``[...]`` (a copy)."""
        return self.epkl_values.clone()

    def mutual_information(self) -> Tensor:
        r""":math:`\mathrm{MI} = \mathrm{EPKL} - \mathrm{MKL} \ge 0`, ``[...]``."""
        return (self.epkl_values - self.mkl_values).clamp(min=0.0)

    def entropy_of_expected(self) -> Tensor:
        r""":math:`\mathcal{H}[\bar p] = \mathrm{ExE} + \mathrm{MI}` of the full ensemble, ``[...]``."""
        return self.expected_entropy + self.mutual_information()

    def uncertainty(self) -> dict[str, Tensor]:
        """The five token-level measures of :data:`~proxy_end2.uncertainty.UNCERTAINTY_KEYS`, ``[...]`` each."""
        mi = self.mutual_information()
        return {"entropy_of_expected": self.expected_entropy + mi, "expected_entropy": self.expected_entropy,
                "mutual_information": mi, "epkl": self.epkl(), "mkl": self.mkl()}

    def tail_log_prob(self) -> Tensor:
        r""":math:`\ln u = \ln\tau - \ln(K - k)`, the log-probability of each class outside the top-k, ``[...]``
        (``-inf`` when ``k = K``)."""
        rest = self.num_classes - self.topk
        if rest == 0:
            return torch.full_like(self.tail_log_mass, -math.inf)
        return self.tail_log_mass - math.log(rest)

    def dense_log_mean_probs(self, rows: slice | None = None, dtype: torch.dtype | None = None) -> Tensor:
        r""":math:`\ln\tilde p` (module docstring) of the positions ``rows`` of the flattened leading shape,
        ``[n, K]`` in ``dtype`` (default: that of the top-k log-probabilities); all positions when ``rows``
        is None. Memory: one ``[n, K]`` tensor, so callers densify chunk by chunk."""
        k = self.topk
        flat_index = self.topk_indices.reshape(-1, k)
        flat_log_probs = self.topk_log_probs.reshape(-1, k)
        tail = self.tail_log_prob().reshape(-1)
        if rows is not None:
            flat_index, flat_log_probs, tail = flat_index[rows], flat_log_probs[rows], tail[rows]
        dtype = dtype or self.topk_log_probs.dtype
        out = tail.to(dtype).unsqueeze(-1).expand(tail.shape[0], self.num_classes).clone()  # [n, K]
        return out.scatter_(-1, flat_index.long(), flat_log_probs.to(dtype))

    def select(self, mask: Tensor) -> TopKStatistics:
        """Keep the positions where the boolean ``mask`` (exactly the leading shape) is True; the result has
        the flattened leading shape ``[N]``."""
        if mask.dtype != torch.bool or mask.shape != self.leading_shape:
            raise ValueError(f"mask must be a bool tensor of the leading shape {tuple(self.leading_shape)}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        return TopKStatistics(
            topk_indices=self.topk_indices[mask], topk_log_probs=self.topk_log_probs[mask],
            tail_log_mass=self.tail_log_mass[mask], mkl_values=self.mkl_values[mask],
            epkl_values=self.epkl_values[mask], expected_entropy=self.expected_entropy[mask],
            num_classes=self.num_classes, num_members=self.num_members,
        )


def _tail_log_mass(log_mean_probs: Tensor, index: Tensor) -> Tensor:
    r""":math:`\ln\sum_{k\notin T}\bar p_k` ``[n]`` of a chunk ``[n, K]`` with top-k indices ``[n, k]``."""
    others = log_mean_probs.scatter(-1, index, -math.inf)  # [n, K], the top-k removed
    return torch.logsumexp(others, dim=-1)


def topk_statistics(stats: EnsembleStatistics, k: int) -> TopKStatistics:
    r"""Compress ensemble statistics to their top-``k`` classes, tail mass and scalar measures.

    Args:
        stats: full statistics, leading shape ``[...]``, ``K`` classes.
        k: classes kept per position, ``1 <= k <= K``.

    Returns:
        :class:`TopKStatistics` with the same leading shape: indices (int64) sorted by decreasing
        :math:`\bar p`, log-probabilities, :math:`\ln\tau` and the scalars in the statistics' dtype.
        The tail is computed on row chunks (one chunk-sized ``[n, K]`` temporary).

    Raises:
        ValueError: if ``k`` is not in ``[1, K]``.
    """
    num_classes = stats.num_classes
    if not 1 <= k <= num_classes:
        raise ValueError(f"top-k size must be in [1, K = {num_classes}], got k = {k}")
    log_mean = stats.log_mean_probs.reshape(-1, num_classes)  # [N, K]
    values, index = torch.topk(log_mean, k, dim=-1)  # [N, k], decreasing
    tail = torch.full(values.shape[:1], -math.inf, dtype=values.dtype, device=values.device)  # [N]
    if k < num_classes:
        for rows in row_slices(log_mean.shape[0], num_classes, log_mean.device, stats.chunk_elements):
            tail[rows] = _tail_log_mass(log_mean[rows], index[rows])
    shape = stats.leading_shape
    return TopKStatistics(
        topk_indices=index.reshape(*shape, k), topk_log_probs=values.reshape(*shape, k),
        tail_log_mass=tail.reshape(shape), mkl_values=stats.mkl(), epkl_values=stats.epkl(),
        expected_entropy=stats.expected_entropy.clone(), num_classes=num_classes, num_members=stats.num_members,
    )
