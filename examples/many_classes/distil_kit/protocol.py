"""The comparison protocol shared by the examples: for each loss, one student trained with the same
optimiser, step budget, batches and initialisation; its learning rate chosen on the grid for the first seed
and reused for the others; gradient probes during training; the same assessment afterwards.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from torch import nn

from .assessment import assess_student
from .gradients import gradient_summary
from .lr_selection import select_learning_rate
from .training import TrainConfig, train_student
from .transfer import TransferSet

logger = logging.getLogger(__name__)


@dataclass
class Splits:
    """``train`` (the transfer set the students learn from), ``valid`` (in-domain: the learning-rate choice;
    its first ``probe_size`` inputs are the gradient probe), ``test`` (in-domain) and the named OOD sets."""

    train: TransferSet
    valid: TransferSet
    test: TransferSet
    ood: dict[str, TransferSet] = field(default_factory=dict)


def run_loss(
    loss: str,
    make_model: Callable[[], nn.Module],
    splits: Splits,
    train_cfg: TrainConfig,
    lrs: tuple[float, ...],
    lr: Optional[float],
    probe_size: int,
) -> tuple[dict, nn.Module]:
    """Train and assess one student with ``loss``.

    Args:
        loss: loss name.
        make_model: a freshly (and always identically) initialised student.
        splits: the data.
        train_cfg: optimisation settings (its ``lr`` is ignored).
        lrs: the grid, used when ``lr`` is None.
        lr: a learning rate chosen earlier (another seed), or None to choose it now.
        probe_size: positions of the gradient probe.

    Returns:
        The record ``{"loss", "lr", "lr_scores" (if chosen now), "train_seconds", "final_loss", "diverged",
        "gradients" {step: shares}, "metrics"}`` (see :func:`~.assessment.assess_student`) and the student.
    """
    probe_set = splits.valid.head(probe_size)

    def probe(model: nn.Module) -> dict:
        return gradient_summary(model, loss, probe_set)

    record: dict = {"loss": loss}
    if lr is None:
        choice = select_learning_rate(make_model, loss, splits.train, splits.valid, train_cfg, lrs, probe)
        model, result, record["lr_scores"], lr = choice.model, choice.result, choice.scores, choice.lr
    else:
        model = make_model()
        result = train_student(model, loss, splits.train, replace(train_cfg, lr=lr), probe)
    record.update(lr=lr, train_seconds=result.seconds, final_loss=result.final_loss, diverged=result.diverged,
                  gradients=result.probes)
    record["metrics"] = assess_student(loss, model, splits.test, splits.ood)
    m = record["metrics"]
    logger.info("  %s lr=%g: KL(pbar||softmax z) %.4f, top-1 agreement %.3f (%.1f s)", loss, lr, m["kl_softmax"],
                m["top1_agreement"], result.seconds)
    return record, model


def run_losses(
    losses: tuple[str, ...],
    make_model: Callable[[], nn.Module],
    splits: Splits,
    train_cfg: TrainConfig,
    lrs: tuple[float, ...],
    chosen_lrs: dict[str, float],
    probe_size: int,
) -> tuple[list[dict], dict[str, nn.Module]]:
    """:func:`run_loss` for every loss; ``chosen_lrs[loss]`` is filled on first use and reused afterwards.
    Returns the records and the students by loss name."""
    records, models = [], {}
    for loss in losses:
        record, models[loss] = run_loss(loss, make_model, splits, train_cfg, lrs, chosen_lrs.get(loss), probe_size)
        chosen_lrs.setdefault(loss, record["lr"])
        records.append(record)
    return records, models
