"""One (K, seed) cell of the many-classes experiment: teachers, transfer sets, three students, their metrics.

For every loss the learning rate is chosen on the first seed of each K by :mod:`distil_kit.lr_selection`
(the same grid and validation criterion for all losses) and reused for the other seeds; every run has the
same optimiser, step budget, batch size, batches and student initialisation (seeded by the seed).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from distil_kit.assessment import assess_ensemble, assess_student
from distil_kit.gradients import gradient_summary
from distil_kit.lr_selection import select_learning_rate
from distil_kit.objectives import LOSS_NAMES
from distil_kit.students import MLPStudent
from distil_kit.training import TrainConfig, train_student
from distil_kit.transfer import TransferSet, build_transfer_set
from synthetic_teachers import EnsembleSpec, SyntheticEnsemble, in_domain_inputs, ood_inputs, transfer_inputs

logger = logging.getLogger(__name__)

#: Added to the seed for the input draws (the teachers' weights use the seed itself).
DATA_SEED_OFFSET = 1000
#: Name of the OOD set in the results.
OOD_NAME = "far"


@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes and budgets (defaults: the recorded full run; see ``run_experiment.py --quick``)."""

    num_classes: tuple[int, ...] = (10, 100, 1000, 10000)
    seeds: tuple[int, ...] = (0, 1, 2)
    losses: tuple[str, ...] = LOSS_NAMES
    steps: int = 300
    batch_size: int = 64
    hidden: int = 64
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    train_size: int = 4096
    valid_size: int = 512
    test_size: int = 1000
    probe_size: int = 128
    probe_fractions: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)
    spec_overrides: dict = field(default_factory=dict)

    def spec(self, num_classes: int) -> EnsembleSpec:
        """The teacher ensemble's parameters for ``K = num_classes``."""
        return EnsembleSpec(num_classes=num_classes, **self.spec_overrides)

    def probe_steps(self) -> tuple[int, ...]:
        """Steps of the gradient probes (0 = initialisation)."""
        return tuple(sorted({round(f * self.steps) for f in self.probe_fractions}))


@dataclass
class Splits:
    """Transfer sets of one (K, seed): ``train`` (with auxiliary inputs), ``valid`` (in-domain, for the
    learning rate; its first inputs are the gradient probe), ``test`` (in-domain) and ``ood``."""

    train: TransferSet
    valid: TransferSet
    test: TransferSet
    ood: TransferSet


def make_splits(spec: EnsembleSpec, seed: int, cfg: ExperimentConfig) -> Splits:
    """Draw the teachers and the inputs of one (K, seed) and run the teachers once on every input."""
    members = SyntheticEnsemble(spec, seed).members()
    gen = torch.Generator().manual_seed(DATA_SEED_OFFSET + seed)
    return Splits(
        train=build_transfer_set(members, transfer_inputs(spec, cfg.train_size, gen)),
        valid=build_transfer_set(members, in_domain_inputs(spec, cfg.valid_size, gen)),
        test=build_transfer_set(members, in_domain_inputs(spec, cfg.test_size, gen)),
        ood=build_transfer_set(members, ood_inputs(spec, cfg.test_size, gen)),
    )


def run_loss(loss: str, splits: Splits, seed: int, cfg: ExperimentConfig, lr: Optional[float]) -> dict:
    """Train and assess one student. ``lr=None``: choose it on the grid (and record the grid's scores)."""
    spec_dim, k = splits.train.inputs.shape[1], splits.train.num_classes

    def make_model() -> MLPStudent:
        torch.manual_seed(seed)  # the same initialisation for every loss and learning rate
        return MLPStudent(spec_dim, cfg.hidden, k)

    probe_set = splits.valid.head(cfg.probe_size)
    train_cfg = TrainConfig(cfg.steps, cfg.batch_size, lr or cfg.lrs[0], seed, cfg.probe_steps())
    probe = lambda model: gradient_summary(model, loss, probe_set)  # noqa: E731
    record: dict = {"num_classes": k, "seed": seed, "loss": loss}
    if lr is None:
        choice = select_learning_rate(make_model, loss, splits.train, splits.valid, train_cfg, cfg.lrs, probe)
        model, result, record["lr_scores"] = choice.model, choice.result, choice.scores
        lr = choice.lr
    else:
        model = make_model()
        result = train_student(model, loss, splits.train, train_cfg, probe)
    record.update(lr=lr, train_seconds=result.seconds, final_loss=result.final_loss, diverged=result.diverged,
                  gradients=result.probes)
    record["metrics"] = assess_student(loss, model, splits.test, {OOD_NAME: splits.ood})
    return record


def run_cell(k: int, seed: int, cfg: ExperimentConfig, chosen_lrs: dict[tuple[int, str], float]) -> dict:
    """All losses for one (K, seed). ``chosen_lrs[(K, loss)]`` is filled by the first seed and reused."""
    start = time.perf_counter()
    splits = make_splits(cfg.spec(k), seed, cfg)
    logger.info("K=%d seed=%d: teacher statistics ready (%.1f s)", k, seed, time.perf_counter() - start)
    cell = {"num_classes": k, "seed": seed, "ensemble": assess_ensemble(splits.test, {OOD_NAME: splits.ood}), "runs": []}
    for loss in cfg.losses:
        record = run_loss(loss, splits, seed, cfg, chosen_lrs.get((k, loss)))
        chosen_lrs.setdefault((k, loss), record["lr"])
        m = record["metrics"]
        logger.info("K=%d seed=%d %s lr=%g: KL %.4f, top-1 agreement %.3f (%.1f s)", k, seed, loss, record["lr"],
                    m["kl_softmax"], m["top1_agreement"], record["train_seconds"])
        cell["runs"].append(record)
    cell["seconds"] = time.perf_counter() - start
    return cell
