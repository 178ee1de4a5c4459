"""Distil one student: Adam, a fixed number of steps, cosine learning-rate decay, optional probes.

The same loop, optimiser, schedule and step budget serve every loss; only the loss name and the learning
rate (chosen by :mod:`.lr_selection`) differ between runs.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .objectives import per_position_loss
from .transfer import TransferSet

logger = logging.getLogger(__name__)

Probe = Callable[[nn.Module], dict]
"""Called with the student (in eval mode, no update in progress) at the configured steps."""

#: Batches averaged into the reported final training loss.
FINAL_LOSS_WINDOW = 20
#: Debug log interval, steps.
LOG_EVERY = 100


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        steps: number of Adam updates.
        batch_size: positions per update, drawn uniformly with replacement from the transfer set.
        lr: peak learning rate; cosine decay to 0 over ``steps``.
        seed: seeds the batch order (the student's initialisation is the caller's).
        probe_steps: steps at which the probe runs: 0 is before the first update, ``steps`` after the last.
    """

    steps: int
    batch_size: int
    lr: float
    seed: int
    probe_steps: tuple[int, ...] = ()


@dataclass
class TrainResult:
    """What a run produced: ``final_loss`` (nats, mean over the last batches), ``diverged`` (a non-finite
    loss stopped the run), the probe outputs by step, and the wall time (s)."""

    final_loss: float
    diverged: bool
    probes: dict[int, dict] = field(default_factory=dict)
    seconds: float = 0.0


def _run_probe(model: nn.Module, probe: Optional[Probe], step: int, cfg: TrainConfig, out: dict[int, dict]) -> None:
    if probe is not None and step in cfg.probe_steps:
        model.eval()
        out[step] = probe(model)
        model.train()


def train_student(
    model: nn.Module, loss_name: str, data: TransferSet, cfg: TrainConfig, probe: Optional[Probe] = None
) -> TrainResult:
    """Train ``model`` in place on ``data`` with the loss ``loss_name`` (see :mod:`.objectives`).

    Args:
        model: the student, ``inputs [n, ...] -> logits [n, K]``, already initialised.
        loss_name: one of :data:`~.objectives.LOSS_NAMES`.
        data: the transfer set.
        cfg: optimisation settings.
        probe: optional function called at ``cfg.probe_steps``.

    Returns:
        :class:`TrainResult`. A non-finite loss stops the run (``diverged=True``, ``final_loss=inf``).
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, cfg.steps))
    probes: dict[int, dict] = {}
    recent: list[float] = []
    model.train()
    for step in range(cfg.steps):
        _run_probe(model, probe, step, cfg, probes)
        batch = data.take(torch.randint(len(data), (cfg.batch_size,), generator=gen))
        loss = per_position_loss(loss_name, model(batch.inputs), batch.stats).mean()
        value = loss.detach().item()
        if not math.isfinite(value):
            logger.warning("%s lr=%g: non-finite loss at step %d, run stopped", loss_name, cfg.lr, step)
            return TrainResult(math.inf, True, probes, time.perf_counter() - start)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        recent = (recent + [value])[-FINAL_LOSS_WINDOW:]
        if (step + 1) % LOG_EVERY == 0:
            logger.debug("%s lr=%g step %d loss %.4f", loss_name, cfg.lr, step + 1, value)
    _run_probe(model, probe, cfg.steps, cfg, probes)
    model.eval()
    final = sum(recent) / len(recent) if recent else math.nan
    return TrainResult(final, False, probes, time.perf_counter() - start)
