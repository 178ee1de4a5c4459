#!/usr/bin/env python
"""EnD^2's own toy setting: distil an ensemble of MLPs on a 2-D 3-class spiral with Proxy-EnD^2, EnD^2, EnD.

    python examples/classification/run_spiral.py                          # recorded run (3 seeds)
    python examples/classification/run_spiral.py --quick --out /tmp/spiral   # reduced run (tests)

Writes ``results.json``, ``results.md`` and ``uncertainty_maps.png`` (first seed) into ``--out`` (default
``results/spiral`` next to this file).
"""
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parents[1]), str(_HERE), str(_HERE.parent / "many_classes")]  # proxy_end2, distil_kit

from distil_kit.reporting import setup_logging  # noqa: E402

setup_logging()  # first: fairseq (imported by proxy_end2) would set the root logger to DEBUG

import torch  # noqa: E402

from distil_kit.students import MLPStudent  # noqa: E402
from classification_experiment import ClassificationConfig, Task, seeded  # noqa: E402
from runner import run_task  # noqa: E402
from spiral_data import NUM_CLASSES, auxiliary_inputs, ood_inputs, spiral  # noqa: E402
from spiral_plots import plot_uncertainty_maps  # noqa: E402
from teacher_training import TeacherConfig  # noqa: E402

DATA_SEED = 0
#: Points per arm of each split, and auxiliary transfer inputs.
TRAIN_PER_CLASS, VALID_PER_CLASS, TEST_PER_CLASS = 300, 100, 300
AUX_INPUTS, OOD_INPUTS = 900, 900
HIDDEN = 64
FULL = ClassificationConfig(
    teacher=TeacherConfig(steps=600, batch_size=64, lr=1e-2, weight_decay=0.0),
    seeds=(0, 1, 2), num_teachers=10, steps=600, batch_size=64, lrs=(3e-3, 1e-2, 3e-2, 1e-1),
)
QUICK = ClassificationConfig(
    teacher=TeacherConfig(steps=150, batch_size=64, lr=1e-2, weight_decay=0.0),
    seeds=(0,), num_teachers=3, steps=100, batch_size=64, lrs=(1e-2,), probe_size=48,
)


def build_task() -> Task:
    """Spiral splits; transfer set = training points + uniform auxiliary points; OOD = the ring around."""
    gen = torch.Generator().manual_seed(DATA_SEED)
    train_x, train_y = spiral(TRAIN_PER_CLASS, gen)
    valid_x, valid_y = spiral(VALID_PER_CLASS, gen)
    test_x, test_y = spiral(TEST_PER_CLASS, gen)
    transfer_x = torch.cat([train_x, auxiliary_inputs(AUX_INPUTS, gen)])
    return Task(
        name="spiral", train_x=train_x, train_y=train_y, transfer_x=transfer_x,
        valid_x=valid_x, valid_y=valid_y, test_x=test_x, test_y=test_y, ood={"ring": ood_inputs(OOD_INPUTS, gen)},
        make_teacher=seeded(lambda: MLPStudent(2, HIDDEN, NUM_CLASSES)),
        make_student=seeded(lambda: MLPStudent(2, HIDDEN, NUM_CLASSES)),
    )


def main(argv: list[str] | None = None) -> int:
    return run_task("examples/classification/run_spiral.py", build_task, FULL, QUICK,
                    _HERE / "results" / "spiral", argv, figure=plot_uncertainty_maps)


if __name__ == "__main__":
    sys.exit(main())
