"""Learning-rate choice: the same small grid and the same validation criterion for every loss.

Each candidate learning rate trains a student from the same initialisation, with the same batches and step
budget; the one with the lowest validation KL(pbar || softmax z) wins. The criterion is the same for all
losses (the student's mean is what every one of them is meant to get right), so no loss is judged by its
own, incomparable, value.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from torch import nn

from .fidelity import kl_to_softmax, predict_logits
from .training import Probe, TrainConfig, TrainResult, train_student
from .transfer import TransferSet

logger = logging.getLogger(__name__)


@dataclass
class LrChoice:
    """The chosen ``lr``, every candidate's validation score (``scores[lr]``, nats; inf if the run diverged
    or gave non-finite predictions), and the chosen run's student and training result."""

    lr: float
    scores: dict[float, float]
    model: nn.Module
    result: TrainResult


def validation_kl(model: nn.Module, valid: TransferSet) -> float:
    """Mean KL(pbar || softmax z) over the validation positions, nats (inf if not finite)."""
    value = float(kl_to_softmax(predict_logits(model, valid.inputs), valid.stats).mean())
    return value if math.isfinite(value) else math.inf


def select_learning_rate(
    make_model: Callable[[], nn.Module],
    loss_name: str,
    train: TransferSet,
    valid: TransferSet,
    cfg: TrainConfig,
    lrs: Sequence[float],
    probe: Optional[Probe] = None,
) -> LrChoice:
    """Train one student per learning rate in ``lrs`` and keep the best on ``valid``.

    Args:
        make_model: returns a freshly initialised student (the same one on every call: seed inside).
        loss_name: the loss to train with.
        train, valid: transfer sets.
        cfg: settings; its ``lr`` is replaced by each candidate.
        lrs: candidate learning rates (non-empty).
        probe: passed to :func:`~.training.train_student`.

    Returns:
        :class:`LrChoice`; ties go to the first candidate.
    """
    if not lrs:
        raise ValueError("need at least one learning rate")
    best: Optional[LrChoice] = None
    scores: dict[float, float] = {}
    for lr in lrs:
        model = make_model()
        result = train_student(model, loss_name, train, replace(cfg, lr=lr), probe)
        scores[lr] = math.inf if result.diverged else validation_kl(model, valid)
        logger.info("  %s lr=%g: validation KL %.4f nats (%.1f s)", loss_name, lr, scores[lr], result.seconds)
        if best is None or scores[lr] < scores[best.lr]:
            best = LrChoice(lr, scores, model, result)
    assert best is not None
    best.scores = scores
    return best
