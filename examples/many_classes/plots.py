"""The many-classes figure: each metric against K (log axis), one line per loss, mean ± std over seeds."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from distil_kit.objectives import LOSS_LABELS, LOSS_NAMES  # noqa: E402
from experiment import OOD_NAME  # noqa: E402
from summary import ENSEMBLE  # noqa: E402

#: Line colour per model.
COLOURS = {"proxy": "tab:blue", "end2": "tab:red", "end2_c0": "tab:orange", "kl": "tab:green", ENSEMBLE: "black"}
#: (panel title, flattened key, log y-axis)
PANELS: tuple[tuple[str, str, bool], ...] = (
    ("KL(p̄ ‖ softmax z), nats (test)", "metrics.kl_softmax", True),
    ("top-1 agreement with the ensemble", "metrics.top1_agreement", False),
    ("Spearman(student MI, ensemble MI)", "metrics.spearman_mutual_information", False),
    ("OOD ROC-AUC (MI; EnD: total)", "ood_auc", False),
)
FIGURE_SIZE = (15, 8)
DPI = 120


def _series(summary: dict, model: str, key: str) -> tuple[list[int], list[float], list[float]]:
    ks, means, stds = [], [], []
    for k, models in summary.items():
        stats = models.get(model, {}).get(key)
        if stats and stats["n"]:
            ks.append(int(k))
            means.append(stats["mean"])
            stds.append(stats["std"])
    return ks, means, stds


def _ood_key(model: str) -> str:
    if model == ENSEMBLE:
        return f"ood.{OOD_NAME}.auc_mutual_information"
    measure = "auc_total" if model == "kl" else "auc_mutual_information"
    return f"metrics.ood.{OOD_NAME}.{measure}"


def _panel(ax, summary: dict, key: str, log_y: bool, models: Sequence[str]) -> None:
    for model in models:
        series_key = _ood_key(model) if key == "ood_auc" else key
        ks, means, stds = _series(summary, model, series_key)
        if ks:
            label = "ensemble" if model == ENSEMBLE else LOSS_LABELS[model]
            ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, color=COLOURS[model], label=label)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("number of classes K")
    ax.grid(alpha=0.3)


def _gradient_panel(ax, summary: dict, step: int, head: str) -> None:
    for model in LOSS_NAMES:
        ks, means, stds = _series(summary, model, f"gradients.{step}.{head}")
        if ks:
            ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, color=COLOURS[model], label=LOSS_LABELS[model])
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("number of classes K")
    ax.grid(alpha=0.3)


def plot_summary(summary: dict, probe_steps: Sequence[int], path: Path, head: str = "top5") -> None:
    """Write the 2x3 figure: four metric panels and the gradient share on the ensemble's ``head`` classes at
    initialisation and at the end of training."""
    fig, axes = plt.subplots(2, 3, figsize=FIGURE_SIZE)
    flat = axes.ravel()
    for ax, (title, key, log_y) in zip(flat[:4], PANELS):
        models = LOSS_NAMES + ((ENSEMBLE,) if key == "ood_auc" else ())
        _panel(ax, summary, key, log_y, models)
        ax.set_title(title)
    ks, means, _ = _series(summary, ENSEMBLE, "kl_uniform")
    flat[0].plot(ks, means, ":", color="grey", label="uniform prediction")
    for ax, step in zip(flat[4:], (probe_steps[0], probe_steps[-1])):
        _gradient_panel(ax, summary, step, head)
        ax.set_title(f"share of |dC/dz|² on the top-5 classes of p̄, step {step}")
    flat[0].legend()
    flat[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
