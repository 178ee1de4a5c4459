"""Train the teacher ensemble: ``M`` classifiers that differ only in their random seed (initialisation and
batch order), each with cross-entropy, Adam and cosine learning-rate decay."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherConfig:
    """Cross-entropy training of one member: ``steps`` Adam updates of ``batch_size`` examples (drawn with
    replacement), peak ``lr`` with cosine decay, decoupled ``weight_decay`` (AdamW)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0


def train_classifier(model: nn.Module, inputs: Tensor, labels: Tensor, cfg: TeacherConfig, seed: int) -> float:
    """Train ``model`` in place on ``inputs`` ``[N, ...]`` / ``labels`` ``[N]``; returns the mean
    cross-entropy (nats) of the last 10% of the updates. The model is left in eval mode and frozen."""
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, cfg.steps))
    tail = max(1, cfg.steps // 10)
    losses = []
    model.train()
    for _ in range(cfg.steps):
        index = torch.randint(inputs.shape[0], (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(model(inputs[index]), labels[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.detach().item())
    model.eval().requires_grad_(False)
    return sum(losses[-tail:]) / tail


def train_ensemble(
    make_member: Callable[[int], nn.Module], inputs: Tensor, labels: Tensor, seeds: Sequence[int], cfg: TeacherConfig
) -> list[nn.Module]:
    """One member per seed (``make_member(seed)`` initialises it), trained by :func:`train_classifier`."""
    members = []
    for seed in seeds:
        start = time.perf_counter()
        model = make_member(seed)
        final = train_classifier(model, inputs, labels, cfg, seed)
        logger.info("  teacher seed %d: final training cross-entropy %.4f (%.1f s)", seed, final,
                    time.perf_counter() - start)
        members.append(model)
    return members
