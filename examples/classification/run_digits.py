#!/usr/bin/env python
"""Distil an ensemble of small CNNs on scikit-learn's 8x8 digits with Proxy-EnD^2, EnD^2 and EnD.

    python examples/classification/run_digits.py                         # recorded run (3 seeds)
    python examples/classification/run_digits.py --quick --out /tmp/digits   # reduced run (tests)

Writes ``results.json`` and ``results.md`` into ``--out`` (default ``results/digits`` next to this file).
"""
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parents[1]), str(_HERE), str(_HERE.parent / "many_classes")]  # proxy_end2, distil_kit

from distil_kit.reporting import setup_logging  # noqa: E402

setup_logging()  # first: fairseq (imported by proxy_end2) would set the root logger to DEBUG

import torch  # noqa: E402

from convnet import SmallConvNet  # noqa: E402
from digits_data import NUM_CLASSES, inverted, load_digit_splits, mixed_pairs, rotated  # noqa: E402
from classification_experiment import ClassificationConfig, Task, seeded  # noqa: E402
from runner import run_task  # noqa: E402
from teacher_training import TeacherConfig  # noqa: E402

#: Seed of the data split and of the auxiliary images (fixed across model seeds).
DATA_SEED = 0
FULL = ClassificationConfig(
    teacher=TeacherConfig(steps=400, batch_size=64, lr=3e-3, weight_decay=1e-4),
    seeds=(0, 1, 2), num_teachers=5, steps=400, batch_size=64, lrs=(3e-3, 1e-2, 3e-2, 1e-1),
)
QUICK = ClassificationConfig(
    teacher=TeacherConfig(steps=100, batch_size=64, lr=3e-3, weight_decay=1e-4),
    seeds=(0,), num_teachers=3, steps=60, batch_size=64, lrs=(1e-2,), probe_size=48,
)


def build_task() -> Task:
    """Digits split; transfer set = training images + as many mixed-pair images; OOD = rotated, inverted."""
    d = load_digit_splits(DATA_SEED)
    gen = torch.Generator().manual_seed(DATA_SEED)
    aux = mixed_pairs(d.train_x, d.train_y, d.train_x.shape[0], gen)
    return Task(
        name="digits",
        train_x=d.train_x, train_y=d.train_y, transfer_x=torch.cat([d.train_x, aux]),
        valid_x=d.valid_x, valid_y=d.valid_y, test_x=d.test_x, test_y=d.test_y,
        ood={"rotated": rotated(d.test_x), "inverted": inverted(d.test_x)},
        make_teacher=seeded(lambda: SmallConvNet(NUM_CLASSES)),
        make_student=seeded(lambda: SmallConvNet(NUM_CLASSES, output_layernorm=True)),
    )


def main(argv: list[str] | None = None) -> int:
    return run_task("examples/classification/run_digits.py", build_task, FULL, QUICK,
                    _HERE / "results" / "digits", argv)


if __name__ == "__main__":
    sys.exit(main())
