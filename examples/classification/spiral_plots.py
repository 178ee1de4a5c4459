"""Uncertainty maps of the spiral task (first seed): total uncertainty and mutual information of the ensemble
and of each student over the plane, with the training points on top."""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from classification_experiment import SeedOutcome, Task  # noqa: E402
from distil_kit.fidelity import predict_logits  # noqa: E402
from distil_kit.objectives import LOSS_LABELS  # noqa: E402
from distil_kit.transfer import teacher_statistics  # noqa: E402
from distil_kit.uncertainty_eval import ensemble_measures, student_measures  # noqa: E402
from spiral_data import grid  # noqa: E402

logger = logging.getLogger(__name__)

GRID_RESOLUTION = 121
FIGURE_NAME = "uncertainty_maps.png"
ROWS = (("total", "total uncertainty H[mean], nats"), ("mutual_information", "mutual information, nats"))
DPI = 110


def _maps(task: Task, outcome: SeedOutcome) -> dict[str, dict[str, np.ndarray]]:
    """Measures on the grid for the ensemble and each student, ``[R, R]`` arrays."""
    points, axis, _ = grid(GRID_RESOLUTION)
    shape = (GRID_RESOLUTION, GRID_RESOLUTION)
    maps = {"ensemble": ensemble_measures(teacher_statistics(outcome.teachers, points))}
    for loss, model in outcome.students.items():
        maps[loss] = student_measures(loss, predict_logits(model, points))
    return {model: {k: v.reshape(shape) for k, v in m.items()} for model, m in maps.items()}


def plot_uncertainty_maps(task: Task, outcome: SeedOutcome, out_dir: Path) -> None:
    """Write ``uncertainty_maps.png``: one column per model, rows = total uncertainty and MI (a softmax
    student has no MI: its panel says so). Colour scales are shared along each row."""
    maps = _maps(task, outcome)
    _, axis, _ = grid(GRID_RESOLUTION)
    extent = (float(axis[0]), float(axis[-1]), float(axis[0]), float(axis[-1]))
    models = list(maps)
    fig, axes = plt.subplots(len(ROWS), len(models), figsize=(3.2 * len(models), 3.2 * len(ROWS)), squeeze=False,
                             constrained_layout=True)
    x, y = task.train_x.numpy(), task.train_y.numpy()
    for row, (measure, label) in enumerate(ROWS):
        vmax = max(float(m[measure].max()) for m in maps.values() if measure in m)
        for col, model in enumerate(models):
            ax = axes[row, col]
            title = "ensemble" if model == "ensemble" else LOSS_LABELS[model]
            ax.set_title(f"{title}\n{label}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if measure not in maps[model]:
                ax.text(0.5, 0.5, "not defined\n(softmax student)", ha="center", va="center", transform=ax.transAxes)
                continue
            image = ax.imshow(maps[model][measure], origin="lower", extent=extent, vmin=0.0, vmax=vmax, cmap="viridis")
            ax.scatter(x[:, 0], x[:, 1], c=y, s=0.3, cmap="autumn", alpha=0.4)
        fig.colorbar(image, ax=axes[row].tolist(), shrink=0.9, pad=0.01)
    path = out_dir / FIGURE_NAME
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    logger.info("wrote %s", path)
