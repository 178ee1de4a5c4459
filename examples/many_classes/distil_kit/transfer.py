"""Transfer sets: the inputs a student is distilled on, with the teachers' statistics for each input.

The teachers run once per input, member by member (:func:`teacher_statistics`): each member's ``[n, K]``
logits are folded into :class:`proxy_end2.uncertainty.EnsembleStatisticsAccumulator` and dropped, so no
``[n, M, K]`` tensor is ever built. What is kept per input is what every loss and measure needs:
``ln pbar`` and ``mean_m ln p_m`` (``[N, K]`` each) and the members' expected entropy (``[N]``). The same
function serves an ImageNet-sized ensemble of ``torch.nn.Module`` teachers (see the classification README).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from proxy_end2.uncertainty import EnsembleStatistics, EnsembleStatisticsAccumulator

Member = Callable[[Tensor], Tensor]
"""A teacher: inputs ``[n, ...]`` -> logits ``[n, K]`` (an ``nn.Module`` in eval mode, or a plain function)."""

#: Inputs per teacher call when statistics are precomputed (bounds the ``[n, K]`` temporaries).
TEACHER_BATCH = 512


def concat_statistics(parts: Sequence[EnsembleStatistics]) -> EnsembleStatistics:
    """Concatenate statistics of ``[n_i]`` positions into one ``[sum n_i]`` (same ``M`` and ``K``)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    members = {p.num_members for p in parts}
    if len(members) != 1:
        raise ValueError(f"statistics of different ensemble sizes: {sorted(members)}")
    return EnsembleStatistics(
        log_mean_probs=torch.cat([p.log_mean_probs for p in parts]),  # [N, K]
        mean_log_probs=torch.cat([p.mean_log_probs for p in parts]),  # [N, K]
        expected_entropy=torch.cat([p.expected_entropy for p in parts]),  # [N]
        num_members=members.pop(),
    )


def index_statistics(stats: EnsembleStatistics, index: Tensor) -> EnsembleStatistics:
    """The statistics of the positions ``index`` (``[n]`` int64) of ``[N]``-position statistics."""
    return EnsembleStatistics(
        log_mean_probs=stats.log_mean_probs[index],  # [n, K]
        mean_log_probs=stats.mean_log_probs[index],  # [n, K]
        expected_entropy=stats.expected_entropy[index],  # [n]
        num_members=stats.num_members,
    )


@torch.no_grad()
def teacher_statistics(
    members: Sequence[Member], inputs: Tensor, batch_size: int = TEACHER_BATCH
) -> EnsembleStatistics:
    """Ensemble statistics of ``members`` on ``inputs``, streamed over members and row batches.

    Args:
        members: the ``M`` teachers (each ``[n, ...] -> [n, K]`` logits).
        inputs: ``[N, ...]``.
        batch_size: inputs per call.

    Returns:
        float32 statistics with leading shape ``[N]``.
    """
    if not members:
        raise ValueError("need at least one teacher")
    parts = []
    for start in range(0, inputs.shape[0], batch_size):
        batch = inputs[start : start + batch_size]
        acc = EnsembleStatisticsAccumulator()
        for member in members:
            acc.add(member(batch))  # [n, K], folded in and dropped
        parts.append(acc.finalize())
    return concat_statistics(parts)


@dataclass(frozen=True)
class TransferSet:
    """Inputs ``[N, ...]``, their teacher statistics (leading shape ``[N]``) and, optionally, labels ``[N]``."""

    inputs: Tensor
    stats: EnsembleStatistics
    labels: Optional[Tensor] = None

    def __post_init__(self) -> None:
        n = self.inputs.shape[0]
        if self.stats.leading_shape != (n,):
            raise ValueError(f"{n} inputs but statistics with leading shape {tuple(self.stats.leading_shape)}")
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"{n} inputs but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_classes(self) -> int:
        """``K``."""
        return self.stats.num_classes

    def take(self, index: Tensor) -> "TransferSet":
        """The sub-set at ``index`` (``[n]`` int64)."""
        labels = None if self.labels is None else self.labels[index]
        return TransferSet(self.inputs[index], index_statistics(self.stats, index), labels)

    def head(self, n: int) -> "TransferSet":
        """The first ``n`` positions (a fixed probe set)."""
        return self.take(torch.arange(min(n, len(self))))


def build_transfer_set(members: Sequence[Member], inputs: Tensor, labels: Optional[Tensor] = None) -> TransferSet:
    """A :class:`TransferSet` with the statistics of ``members`` on ``inputs``."""
    return TransferSet(inputs, teacher_statistics(members, inputs), labels)
