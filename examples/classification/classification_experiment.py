"""One classification task (digits or spiral), one seed: train the teacher ensemble with cross-entropy,
run it once on every transfer/held-out/OOD input, distil one student per loss with the shared protocol of
``examples/many_classes/distil_kit`` and assess everyone, including a single teacher as a reference.

The data split is fixed (``DATA_SEED``); the seed changes the teachers' and students' initialisation and
batch order. Learning rates are chosen on the first seed and reused (``distil_kit.protocol``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from distil_kit.assessment import assess_ensemble, assess_student
from distil_kit.objectives import LOSS_NAMES
from distil_kit.protocol import Splits, run_losses
from distil_kit.training import TrainConfig
from distil_kit.transfer import build_transfer_set
from teacher_training import TeacherConfig, train_ensemble

logger = logging.getLogger(__name__)

#: Member m of seed s is initialised with seed s * MEMBER_SEED_STRIDE + m.
MEMBER_SEED_STRIDE = 100
#: A single teacher (member 0) is assessed as a softmax model: only its total uncertainty exists.
SINGLE_TEACHER = "single_teacher"
ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class Task:
    """A dataset and its models. Inputs ``[N, ...]``, labels ``[N]``; ``transfer_x`` is what the students
    are distilled on (training inputs + auxiliary inputs); ``ood`` maps names to OOD inputs."""

    name: str
    train_x: Tensor
    train_y: Tensor
    transfer_x: Tensor
    valid_x: Tensor
    valid_y: Tensor
    test_x: Tensor
    test_y: Tensor
    ood: dict[str, Tensor]
    make_teacher: Callable[[int], nn.Module]
    make_student: Callable[[int], nn.Module]


@dataclass(frozen=True)
class ClassificationConfig:
    """Budgets: ``num_teachers`` members trained with ``teacher``; students trained ``steps`` Adam updates of
    ``batch_size``, learning rate from ``lrs``; gradient probes at ``probe_fractions`` of the steps."""

    teacher: TeacherConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    num_teachers: int = 5
    losses: tuple[str, ...] = LOSS_NAMES
    steps: int = 600
    batch_size: int = 64
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    probe_size: int = 128
    probe_fractions: tuple[float, ...] = (0.0, 0.5, 1.0)

    def train_config(self, seed: int) -> TrainConfig:
        steps = tuple(sorted({round(f * self.steps) for f in self.probe_fractions}))
        return TrainConfig(self.steps, self.batch_size, self.lrs[0], seed, steps)


def make_splits(task: Task, teachers: list[nn.Module]) -> Splits:
    """Run the teachers once on every input of the task (streamed statistics)."""
    return Splits(
        train=build_transfer_set(teachers, task.transfer_x),
        valid=build_transfer_set(teachers, task.valid_x, task.valid_y),
        test=build_transfer_set(teachers, task.test_x, task.test_y),
        ood={name: build_transfer_set(teachers, x) for name, x in task.ood.items()},
    )


@dataclass
class SeedOutcome:
    """The JSON-able ``record`` of one seed and, for figures, its teachers and students (by loss)."""

    record: dict
    teachers: list[nn.Module] = field(default_factory=list)
    students: dict[str, nn.Module] = field(default_factory=dict)


def run_seed(task: Task, seed: int, cfg: ClassificationConfig, chosen_lrs: Optional[dict[str, float]]) -> SeedOutcome:
    """Teachers, students and all metrics of one seed (``chosen_lrs`` is filled on the first seed)."""
    start = time.perf_counter()
    logger.info("%s seed %d: training %d teachers", task.name, seed, cfg.num_teachers)
    member_seeds = [seed * MEMBER_SEED_STRIDE + m for m in range(cfg.num_teachers)]
    teachers = train_ensemble(task.make_teacher, task.train_x, task.train_y, member_seeds, cfg.teacher)
    splits = make_splits(task, teachers)

    def make_model() -> nn.Module:
        return task.make_student(seed)

    runs, students = run_losses(cfg.losses, make_model, splits, cfg.train_config(seed), cfg.lrs,
                                chosen_lrs if chosen_lrs is not None else {}, cfg.probe_size)
    record = {
        "seed": seed,
        ENSEMBLE: assess_ensemble(splits.test, splits.ood),
        SINGLE_TEACHER: assess_student("kl", teachers[0], splits.test, splits.ood),
        "runs": runs,
        "seconds": time.perf_counter() - start,
    }
    return SeedOutcome(record, teachers, students)


def seeded(factory: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    """``factory`` wrapped so that ``make(seed)`` initialises it under ``torch.manual_seed(seed)``."""

    def make(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return factory()

    return make
