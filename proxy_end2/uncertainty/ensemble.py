r"""Sufficient statistics and uncertainty measures of an ensemble of categorical predictors.

Pure torch (no fairseq): usable by any classifier whose members produce ``[..., K]`` logits, e.g. the
next-token distributions of ``M`` translation models (``[B, T, K]``) or ImageNet classifiers (``[B, K]``).
Classes are always on the last dimension, every leading dimension is a batch dimension, and all
information measures are in nats (natural logarithms).

For one position with member distributions :math:`p_1, \dots, p_M` over :math:`K` classes and
:math:`\bar p = \frac1M \sum_m p_m`:

.. math::

    \mathcal{H}[\bar p] &= -\sum_k \bar p_k \ln \bar p_k
        && \text{(total uncertainty, entropy of expected)} \\
    \mathrm{ExE} &= \frac1M \sum_m \mathcal{H}[p_m] && \text{(data uncertainty, expected entropy)} \\
    \mathrm{MI} &= \mathcal{H}[\bar p] - \mathrm{ExE} = \frac1M \sum_m \mathrm{KL}(p_m \,\|\, \bar p)
        && \text{(knowledge uncertainty, mutual information)} \\
    \mathrm{MKL} &= \frac1M \sum_m \mathrm{KL}(\bar p \,\|\, p_m)
        = \sum_k \bar p_k \Big(\ln \bar p_k - \frac1M \sum_m \ln p_{mk}\Big) \\
    \mathrm{EPKL} &= \frac{1}{M^2} \sum_{m, m'} \mathrm{KL}(p_m \,\|\, p_{m'}) = \mathrm{MI} + \mathrm{MKL}.

All five only need three per-position sufficient statistics, :math:`\ln \bar p`,
:math:`\frac1M \sum_m \ln p_m` and ExE, which :class:`EnsembleStatisticsAccumulator` builds one member at a
time, so that a ``[..., M, K]`` tensor never has to exist (with ``K = 40000`` and thousands of tokens per
batch it would not fit in memory).

References:
    Malinin, Mlodozeniec & Gales, "Ensemble Distribution Distillation", ICLR 2020,
    https://arxiv.org/abs/1905.00076.
    Malinin & Gales, "Uncertainty Estimation in Autoregressive Structured Prediction", ICLR 2021,
    https://arxiv.org/abs/2002.07650.
    Ryabinin, Malinin & Gales, "Scaling Ensemble Distribution Distillation to Many Classes with Proxy
    Targets", NeurIPS 2021, https://arxiv.org/abs/2105.06987.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._numerics import row_slices, rowwise_sum, xlogx_from_log

__all__ = [
    "UNCERTAINTY_KEYS",
    "EnsembleStatistics",
    "EnsembleStatisticsAccumulator",
    "ensemble_statistics",
    "ensemble_uncertainty",
]

UNCERTAINTY_KEYS: tuple[str, ...] = (
    "entropy_of_expected",
    "expected_entropy",
    "mutual_information",
    "epkl",
    "mkl",
)
"""Names of the token-level uncertainty measures, in the order the dictionaries list them."""


def _mkl_terms(log_mean: Tensor, mean_log: Tensor) -> Tensor:
    r""":math:`\bar p_k \max(0, \ln\bar p_k - \frac1M\sum_m \ln p_{mk})`, 0 where :math:`\bar p_k = 0`
    (two ``[n, K]`` temporaries and a bool mask)."""
    gap = torch.sub(log_mean, mean_log).clamp_(min=0.0)  # [n, K], >= 0 by Jensen
    gap.masked_fill_((log_mean > -math.inf).logical_not_(), 0.0)  # pbar_k = 0: avoid 0 * (nan or inf)
    return gap.mul_(log_mean.exp())  # [n, K]


@dataclass(frozen=True, eq=False)
class EnsembleStatistics:
    r"""Per-position sufficient statistics of an ``M``-member ensemble (all the losses and measures need).

    Attributes:
        log_mean_probs: ``[..., K]``, :math:`\ln \bar p_k` with :math:`\bar p = \frac1M \sum_m p_m`.
        mean_log_probs: ``[..., K]``, :math:`\frac1M \sum_m \ln p_{mk}` (``-inf`` only if some member
            puts exactly zero probability on class ``k``, which needs a ``-inf`` logit).
        expected_entropy: ``[...]``, :math:`\frac1M \sum_m \mathcal{H}[p_m]` in nats.
        num_members: ``M >= 1``.

    All tensors share one floating dtype (float32 or float64) and device. The methods return ``[...]``
    tensors in that dtype.

    Note:
        Precision floor. :math:`\ln\bar p_k` and :math:`\frac1M\sum_m\ln p_{mk}` are stored separately,
        each rounded to about :math:`2^{-24}|\ln p_k|` in float32, so MKL of (near-)identical members is
        not 0 but up to about :math:`2^{-24} M (\mathcal{H}[\bar p] + 1)` (~1e-7..1e-6 for high-entropy
        40k-class distributions), and MI (a difference of entropies) up to a few :math:`2^{-24}
        \mathcal{H}[\bar p]`. Both are of the order of the :math:`\varepsilon = 2^{-23}` of the proxy
        precision, which is therefore noise-limited for agreeing teachers. float64 statistics
        (``EnsembleStatisticsAccumulator(dtype=torch.float64)``) push the floor to ~1e-15.

    Note:
        Treated as immutable: :meth:`entropy_of_expected` and :meth:`mkl` are computed once per object (on
        row chunks, so their ``[..., K]`` temporaries are bounded) and cached, so that the criteria, the
        proxy precision and the logging can all ask for them in one step at the cost of one evaluation.
        Each call returns a fresh copy of the cached ``[...]`` tensor. Do not modify the statistics'
        tensors in place after calling them. Results that require grad (statistics with an autograd
        history, grad mode on) are not cached.

    Raises:
        ValueError: if ``num_members < 1`` or the shapes of the three tensors do not agree.
    """

    log_mean_probs: Tensor  # [..., K]
    mean_log_probs: Tensor  # [..., K]
    expected_entropy: Tensor  # [...]
    num_members: int
    #: elements per row chunk of the cached ``[..., K]`` passes (None: ``CHUNK_ELEMENTS``); not a statistic
    chunk_elements: int | None = None

    def __post_init__(self) -> None:
        if self.num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {self.num_members}")
        if self.log_mean_probs.dim() < 1:
            raise ValueError("log_mean_probs must have a class dimension, got a 0-dim tensor")
        if self.mean_log_probs.shape != self.log_mean_probs.shape:
            raise ValueError(
                f"mean_log_probs shape {tuple(self.mean_log_probs.shape)} != "
                f"log_mean_probs shape {tuple(self.log_mean_probs.shape)}"
            )
        if self.expected_entropy.shape != self.log_mean_probs.shape[:-1]:
            raise ValueError(
                f"expected_entropy shape {tuple(self.expected_entropy.shape)} != leading shape "
                f"{tuple(self.log_mean_probs.shape[:-1])} of log_mean_probs"
            )

    @property
    def num_classes(self) -> int:
        """``K``, the size of the class (vocabulary) dimension."""
        return self.log_mean_probs.shape[-1]

    @property
    def leading_shape(self) -> torch.Size:
        """The batch shape ``[...]`` in front of the class dimension."""
        return self.log_mean_probs.shape[:-1]

    def _cached(self, name: str, compute) -> Tensor:
        """``compute()`` once per object (not if it requires grad); returns a copy, the cache stays private."""
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_cache", cache)  # frozen dataclass: bypass its __setattr__
        value = cache.get(name)
        if value is None:
            value = compute()
            if value.requires_grad or self.log_mean_probs.requires_grad or self.mean_log_probs.requires_grad:
                return value  # an autograd history: no caching
            cache[name] = value
        return value.clone()

    def mean_probs(self) -> Tensor:
        r""":math:`\bar p`, ``[..., K]``."""
        return self.log_mean_probs.exp()

    def entropy_of_expected(self) -> Tensor:
        r"""Total uncertainty :math:`\mathcal{H}[\bar p] = -\sum_k \bar p_k \ln \bar p_k`, ``[...]``, nats.

        Note:
            Uses :math:`0 \ln 0 = 0`, so a class that every member rules out (``-inf`` logits) adds 0.
        """
        return self._cached("entropy_of_expected", lambda: -rowwise_sum(xlogx_from_log, self.log_mean_probs,
                                                                          max_elements=self.chunk_elements))

    def mutual_information(self) -> Tensor:
        r"""Knowledge uncertainty :math:`\mathrm{MI} = \mathcal{H}[\bar p] - \mathrm{ExE} \ge 0`, ``[...]``.

        Note:
            The difference of two entropies of size up to :math:`\ln K` is exact only to about
            ``finfo.eps * ln K``; results below zero from that round-off are clamped to 0.
        """
        return (self.entropy_of_expected() - self.expected_entropy).clamp(min=0.0)

    def mkl(self) -> Tensor:
        r"""Mean KL :math:`\frac1M \sum_m \mathrm{KL}(\bar p \| p_m)
        = \sum_k \bar p_k (\ln \bar p_k - \frac1M \sum_m \ln p_{mk})`, ``[...]``, nats.

        By Jensen's inequality every bracket is :math:`\ge 0`, so the sum is formed term by term (each
        clamped at 0 against round-off) with no cancellation between classes.

        Note:
            Classes with :math:`\bar p_k = 0` contribute 0. If some member gives exactly zero probability
            (a ``-inf`` logit) to a class that another member supports, :math:`\mathrm{KL}(\bar p \| p_m)`
            is genuinely infinite and so is the result. Finite logits always give a finite value.
        """
        return self._cached("mkl", lambda: rowwise_sum(_mkl_terms, self.log_mean_probs, self.mean_log_probs,
                                                         max_elements=self.chunk_elements))

    def epkl(self) -> Tensor:
        r"""Expected pairwise KL :math:`\frac{1}{M^2}\sum_{m,m'} \mathrm{KL}(p_m \| p_{m'})
        = \mathrm{MI} + \mathrm{MKL}`, ``[...]``, nats.

        Note:
            Inherits the clamp of :meth:`mutual_information`, hence ``epkl >= mkl`` always holds.
        """
        return self.mutual_information() + self.mkl()

    def uncertainty(self) -> dict[str, Tensor]:
        """The five token-level measures of :data:`UNCERTAINTY_KEYS`, each ``[...]`` in nats."""
        eoe = self.entropy_of_expected()  # [...], cached
        mi = (eoe - self.expected_entropy).clamp(min=0.0)  # [...]
        mkl = self.mkl()  # [...], cached
        return {
            "entropy_of_expected": eoe,
            "expected_entropy": self.expected_entropy,
            "mutual_information": mi,
            "epkl": mi + mkl,
            "mkl": mkl,
        }

    def select(self, mask: Tensor) -> EnsembleStatistics:
        """Keep the positions where ``mask`` is True (e.g. drop padding).

        Args:
            mask: boolean tensor with exactly the leading shape ``[...]`` of the statistics.

        Returns:
            Statistics with flattened leading shape ``[N]`` (``N = mask.sum()``): ``[N, K]`` and ``[N]``.
            When ``mask`` is all True nothing is copied: the result holds reshaped views of these tensors
            (and their cached MKL / entropy of the expected, if any).

        Raises:
            ValueError: if ``mask`` is not boolean or its shape differs from the leading shape.
        """
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        if mask.shape != self.leading_shape:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != leading shape {tuple(self.leading_shape)} of the statistics"
            )
        cache = self.__dict__.get("_cache") or {}
        if bool(mask.all()):  # no padding: views, no [N, K] copies
            k = self.num_classes
            selected = EnsembleStatistics(
                log_mean_probs=self.log_mean_probs.reshape(-1, k),  # [N, K]
                mean_log_probs=self.mean_log_probs.reshape(-1, k),  # [N, K]
                expected_entropy=self.expected_entropy.reshape(-1),  # [N]
                num_members=self.num_members,
                chunk_elements=self.chunk_elements,
            )
            carried = {name: value.reshape(-1) for name, value in cache.items()}
        else:
            selected = EnsembleStatistics(
                log_mean_probs=self.log_mean_probs[mask],  # [N, K]
                mean_log_probs=self.mean_log_probs[mask],  # [N, K]
                expected_entropy=self.expected_entropy[mask],  # [N]
                num_members=self.num_members,
                chunk_elements=self.chunk_elements,
            )
            carried = {name: value[mask] for name, value in cache.items()}
        if carried:
            object.__setattr__(selected, "_cache", carried)
        return selected


class EnsembleStatisticsAccumulator:
    r"""Builds :class:`EnsembleStatistics` one member at a time.

    Memory is :math:`O(\prod(\text{leading}) \cdot K)`, independent of ``M``: members are never stacked.
    Each member is normalised with ``log_softmax`` in ``dtype`` and folded into

    .. math::

        \ln S_k = \operatorname{logaddexp}(\ln S_k, \ln p_{mk}) \;(S = \textstyle\sum_m p_m),\qquad
        \textstyle\sum_m \ln p_{mk}, \qquad \textstyle\sum_m \sum_k p_{mk} \ln p_{mk},

    so :math:`\ln \bar p = \ln S - \ln M` keeps full relative precision even for probabilities that
    underflow (``exp`` is never taken before the logarithm).

    Memory: the accumulator owns two ``[..., K]`` running sums (in ``dtype``) and an ``[...]`` one, and
    updates them in place, row chunk by row chunk, so :meth:`add` needs only chunk-sized temporaries on top
    of them and of the member's logits (the caller's tensor is never written to, nor kept).
    :meth:`finalize` allocates the two ``[..., K]`` tensors of the statistics it returns (the running
    sums stay, so more members can be added; they never share memory with the accumulator), or, with
    ``release=True``, turns the running sums themselves into the statistics (no new ``[..., K]`` tensor).

    Autograd: :meth:`add` stays differentiable. When grad mode is on and the member's logits require grad,
    or the running sums already have an autograd history, it runs out of place on whole tensors (a plain
    sequence of torch ops, about seven ``[..., K]`` tensors at its peak). Otherwise (the teachers run
    under ``torch.no_grad()``) it takes the in-place path. Both give the same values.

    Args:
        dtype: floating dtype of the accumulation and of the statistics (default float32).
        chunk_elements: elements per row chunk of the in-place passes and of the statistics' cached
            measures (default ``CHUNK_ELEMENTS``, by device).

    Example:
        >>> acc = EnsembleStatisticsAccumulator()
        >>> for logits in (torch.zeros(2, 3), torch.zeros(2, 3)):
        ...     acc.add(logits)
        >>> acc.finalize().mutual_information()
        tensor([0., 0.])
    """

    def __init__(self, dtype: torch.dtype = torch.float32, chunk_elements: int | None = None) -> None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        self.dtype = dtype
        self.chunk_elements = chunk_elements  # elements per row chunk of add() (None: CHUNK_ELEMENTS)
        self._reset()

    def _reset(self) -> None:
        self._num_members = 0
        self._shape: torch.Size | None = None
        self._log_sum_probs: Tensor | None = None  # [..., K], ln sum_m p_m
        self._sum_log_probs: Tensor | None = None  # [..., K], sum_m ln p_m
        self._sum_neg_entropy: Tensor | None = None  # [...], sum_m sum_k p ln p
        self._owned = False  # the three sums are distinct tensors that only this object references

    @property
    def num_members(self) -> int:
        """Number of members added so far."""
        return self._num_members

    def add(self, member_logits: Tensor) -> None:
        """Fold in one member.

        Args:
            member_logits: ``[..., K]`` logits or log-probabilities of ONE member (``log_softmax`` is
                idempotent), any floating dtype (fp16/bf16 are upcast to ``self.dtype`` first). Not
                modified.

        Raises:
            ValueError: if the tensor is not floating point, has no class dimension, or its shape differs
                from the first member's (checked here, because broadcasting would otherwise hide it).
        """
        if not member_logits.is_floating_point():
            raise ValueError(f"member logits must be a floating point tensor, got dtype {member_logits.dtype}")
        if member_logits.dim() < 1:
            raise ValueError("member logits must have a class dimension [..., K], got a 0-dim tensor")
        if self._shape is not None and member_logits.shape != self._shape:
            raise ValueError(
                f"member {self._num_members} has shape {tuple(member_logits.shape)}, expected "
                f"{tuple(self._shape)} like the first member"
            )
        history = self._num_members > 0 and any(
            t.requires_grad for t in (self._log_sum_probs, self._sum_log_probs, self._sum_neg_entropy)
        )
        differentiable = history or (torch.is_grad_enabled() and member_logits.requires_grad)
        if differentiable or member_logits.numel() == 0 or (self._num_members > 0 and not self._owned):
            self._add_out_of_place(member_logits)
        else:
            self._add_in_place(member_logits)
        self._shape = member_logits.shape
        self._num_members += 1

    def _add_out_of_place(self, member_logits: Tensor) -> None:
        """Whole-tensor, autograd-friendly update; its results are fresh tensors (owned unless aliased)."""
        log_probs = torch.log_softmax(member_logits.to(self.dtype), dim=-1)  # [..., K]
        neg_entropy = xlogx_from_log(log_probs).sum(-1)  # [...], sum_k p ln p <= 0
        if self._num_members == 0:
            self._log_sum_probs = log_probs
            self._sum_log_probs = log_probs  # the same tensor twice: not owned (never updated in place)
            self._sum_neg_entropy = neg_entropy
            self._owned = False
        else:
            self._log_sum_probs = torch.logaddexp(self._log_sum_probs, log_probs)  # [..., K]
            self._sum_log_probs = self._sum_log_probs + log_probs  # [..., K]
            self._sum_neg_entropy = self._sum_neg_entropy + neg_entropy  # [...]
            self._owned = True

    def _add_in_place(self, member_logits: Tensor) -> None:
        """Row chunk by row chunk into the accumulator's own buffers; same values as the whole-tensor path."""
        k = member_logits.shape[-1]
        logits = member_logits.reshape(-1, k)  # [N, K], a view when possible (read only)
        n = logits.shape[0]
        first = self._num_members == 0
        if first:
            kw = dict(dtype=self.dtype, device=member_logits.device)
            self._log_sum_probs = torch.empty(member_logits.shape, **kw)
            self._sum_log_probs = torch.empty(member_logits.shape, **kw)
            self._sum_neg_entropy = torch.empty(member_logits.shape[:-1], **kw)
            self._owned = True
        log_sum = self._log_sum_probs.view(-1, k)  # [N, K]
        sum_log = self._sum_log_probs.view(-1, k)  # [N, K]
        neg_entropy = self._sum_neg_entropy.view(-1)  # [N]
        for rows in row_slices(n, k, member_logits.device, self.chunk_elements):
            log_probs = torch.log_softmax(logits[rows].to(self.dtype), dim=-1)  # [n, K]
            chunk_neg_entropy = xlogx_from_log(log_probs).sum(-1)  # [n]
            if first:
                log_sum[rows] = log_probs
                sum_log[rows] = log_probs
                neg_entropy[rows] = chunk_neg_entropy
            else:
                torch.logaddexp(log_sum[rows], log_probs, out=log_sum[rows])
                sum_log[rows].add_(log_probs)
                neg_entropy[rows].add_(chunk_neg_entropy)

    def finalize(self, release: bool = False) -> EnsembleStatistics:
        """Return the statistics of the members added so far.

        Args:
            release: hand the accumulator's own running sums over to the statistics, scaled in place: no new
                ``[..., K]`` tensor is allocated (peak memory stays that of the two sums), and the
                accumulator is empty afterwards (``num_members == 0``, ready for a new ensemble). Needs sums
                without autograd history that the accumulator owns (the in-place path of :meth:`add`);
                otherwise it falls back to new tensors. Default False: the returned tensors are new (two
                ``[..., K]`` and one ``[...]``), later :meth:`add` calls do not change them, and the
                accumulator stays usable.

        Raises:
            ValueError: if no member was added.
        """
        if self._num_members == 0:
            raise ValueError("cannot finalize ensemble statistics: no member was added (M = 0, expected M >= 1)")
        m = self._num_members
        sums = (self._log_sum_probs, self._sum_log_probs, self._sum_neg_entropy)
        if release and self._owned and not any(t.requires_grad for t in sums):
            stats = EnsembleStatistics(
                log_mean_probs=self._log_sum_probs.sub_(math.log(m)),  # [..., K], the same storage
                mean_log_probs=self._sum_log_probs.div_(m),  # [..., K], the same storage
                expected_entropy=self._sum_neg_entropy.div_(-m),  # [...]
                num_members=m,
                chunk_elements=self.chunk_elements,
            )
            self._reset()  # empty again: the statistics own the buffers now
            return stats
        return EnsembleStatistics(
            log_mean_probs=self._log_sum_probs - math.log(m),  # [..., K]
            mean_log_probs=self._sum_log_probs / m,  # [..., K]
            expected_entropy=-self._sum_neg_entropy / m,  # [...]
            num_members=m,
            chunk_elements=self.chunk_elements,
        )


def ensemble_statistics(member_logits: Tensor, dtype: torch.dtype | None = None) -> EnsembleStatistics:
    """Statistics of a stacked ensemble, members on dimension ``-2``.

    Same code path as streaming: the members are fed one by one to :class:`EnsembleStatisticsAccumulator`.

    Args:
        member_logits: ``[..., M, K]`` logits or log-probabilities of the ``M`` members.
        dtype: accumulation dtype. Default: float64 for float64 input, float32 otherwise (fp16, bf16,
            float32), so half-precision teachers still give float32 statistics.

    Returns:
        :class:`EnsembleStatistics` with leading shape ``[...]``.

    Raises:
        ValueError: if the input has fewer than 2 dimensions or ``M < 1``.
    """
    if member_logits.dim() < 2:
        raise ValueError(
            f"member logits must be [..., M, K] (at least 2 dims), got shape {tuple(member_logits.shape)}"
        )
    num_members = member_logits.shape[-2]
    if num_members < 1:
        raise ValueError(f"need at least one member (M >= 1), got M = {num_members}")
    if dtype is None:
        dtype = torch.float64 if member_logits.dtype == torch.float64 else torch.float32
    acc = EnsembleStatisticsAccumulator(dtype=dtype)
    for m in range(num_members):
        acc.add(member_logits.select(-2, m))  # [..., K]
    return acc.finalize()


def ensemble_uncertainty(member_log_probs: Tensor) -> dict[str, Tensor]:
    r"""Token-level uncertainty of an ensemble: the five measures of :data:`UNCERTAINTY_KEYS`.

    .. math::

        \mathcal{H}[\bar p] = \mathrm{ExE} + \mathrm{MI}, \qquad \mathrm{EPKL} = \mathrm{MI} + \mathrm{MKL}.

    Args:
        member_log_probs: ``[..., M, K]`` member log-probabilities (logits are accepted too).

    Returns:
        dict ``name -> [...]`` tensor, nats, float32 (float64 for float64 input).

    Note:
        MI is clamped at 0 against round-off; see :class:`EnsembleStatistics`.
    """
    return ensemble_statistics(member_log_probs).uncertainty()
