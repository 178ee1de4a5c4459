"""The student: an MLP whose shared hidden representation feeds one K-way output layer.

All K classes read the same last hidden layer, so they compete for its (few) features: a loss whose gradient
is dominated by tail classes spends the shared capacity on the tail. A LayerNorm sits right before the output
projection, as in the paper's Prior Networks (and ``proxy_end2``'s ``prior_transformer``), for numerical
stability of the exp-parametrised concentrations; the same network is used for every loss.
"""
from __future__ import annotations

from torch import Tensor, nn


class MLPStudent(nn.Module):
    """``x [N, in_dim] -> logits z [N, K]``: ``depth`` GELU layers of width ``hidden``, LayerNorm, linear.

    Args:
        in_dim: input features.
        hidden: width of the hidden layers (the shared representation).
        num_classes: ``K``.
        depth: number of hidden layers (>= 1).
    """

    def __init__(self, in_dim: int, hidden: int, num_classes: int, depth: int = 2) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.LayerNorm(hidden))
        self.body = nn.Sequential(*layers)
        self.output = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, K]`` (float32) of inputs ``[N, ...]`` (flattened to ``[N, in_dim]``)."""
        return self.output(self.body(x.reshape(x.shape[0], -1)))
