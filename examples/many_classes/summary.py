"""Aggregate the many-classes runs over seeds and render the Markdown tables of ``results.md``."""
from __future__ import annotations

from typing import Sequence

from distil_kit.objectives import LOSS_LABELS
from distil_kit.reporting import MISSING, aggregate, format_summary, markdown_table
from experiment import OOD_NAME

ENSEMBLE = "ensemble"
"""Key of the teachers' own numbers in the summary."""

#: Main table: (column header, flattened key, decimals).
MAIN_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("KL(p̄‖softmax z)", "metrics.kl_softmax", 3),
    ("KL(p̄‖α/α₀)", "metrics.kl_dirichlet_mean", 3),
    ("top-1 agreement", "metrics.top1_agreement", 3),
    ("Spearman MI", "metrics.spearman_mutual_information", 3),
    ("Spearman EPKL", "metrics.spearman_epkl", 3),
    ("OOD AUC MI", f"metrics.ood.{OOD_NAME}.auc_mutual_information", 3),
    ("OOD AUC total", f"metrics.ood.{OOD_NAME}.auc_total", 3),
    ("median α₀", "metrics.alpha0_median", 0),
)
#: Gradient table: head definitions (flattened suffixes) and their headers.
GRADIENT_HEADS: tuple[tuple[str, str], ...] = (("top1", "top-1"), ("top5", "top-5"), ("mass90", "90% mass"))


def summarise_cells(cells: Sequence[dict]) -> dict:
    """``summary[K][model][flat key] = {"mean", "std", "min", "max", "n"}`` over seeds; ``model`` is a loss
    name or :data:`ENSEMBLE`; the chosen learning rate is under ``"lr"``."""
    summary: dict = {}
    for k in sorted({c["num_classes"] for c in cells}):
        of_k = [c for c in cells if c["num_classes"] == k]
        summary[k] = {ENSEMBLE: aggregate([c["ensemble"] for c in of_k])}
        losses = dict.fromkeys(r["loss"] for c in of_k for r in c["runs"])
        for loss in losses:
            summary[k][loss] = aggregate([r for c in of_k for r in c["runs"] if r["loss"] == loss])
    return summary


def main_table(summary: dict) -> str:
    """One row per (K, model): fidelity, knowledge-uncertainty and OOD columns, mean ± std over seeds."""
    headers = ["K", "model", "lr"] + [h for h, _, _ in MAIN_COLUMNS]
    rows = []
    for k, models in summary.items():
        ens = models[ENSEMBLE]
        rows.append([str(k), "uniform prediction (reference)", MISSING, format_summary(ens.get("kl_uniform"))]
                    + [MISSING] * (len(MAIN_COLUMNS) - 1))
        rows.append([str(k), "ensemble (reference)", MISSING, MISSING, MISSING, MISSING, MISSING, MISSING,
                     format_summary(ens.get(f"ood.{OOD_NAME}.auc_mutual_information")),
                     format_summary(ens.get(f"ood.{OOD_NAME}.auc_total")), MISSING])
        for loss, stats in models.items():
            if loss == ENSEMBLE:
                continue
            lr = stats["lr"]["mean"]
            rows.append([str(k), LOSS_LABELS[loss], f"{lr:g}"]
                        + [format_summary(stats.get(key), digits) for _, key, digits in MAIN_COLUMNS])
    return markdown_table(headers, rows)


def gradient_table(summary: dict, probe_steps: Sequence[int]) -> str:
    """Share of the squared logit-gradient norm on the ensemble's top classes, per probe step."""
    headers = ["K", "model", "head"] + [f"step {s}" for s in probe_steps] + ["mean head size"]
    rows = []
    for k, models in summary.items():
        for loss, stats in models.items():
            if loss == ENSEMBLE:
                continue
            for suffix, label in GRADIENT_HEADS:
                cells = [format_summary(stats.get(f"gradients.{s}.{suffix}"), 3) for s in probe_steps]
                size = stats.get(f"gradients.0.{suffix}_size") if suffix == "mass90" else None
                size_text = f"{size['mean']:.1f}" if size else label.split("-")[-1]
                rows.append([str(k), LOSS_LABELS[loss], label] + cells + [size_text])
    return markdown_table(headers, rows)


def ensemble_table(summary: dict) -> str:
    """The teachers per K: mean top-1 probability, entropy, MI and EPKL in domain and on the OOD set."""
    headers = ["K", "mean max p̄", "H[p̄] ID", "MI ID", "MI OOD", "EPKL ID", "EPKL OOD"]
    keys = ("top1_mass", "mean_total", "mean_mutual_information", f"ood.{OOD_NAME}.mean_mutual_information",
            "mean_epkl", f"ood.{OOD_NAME}.mean_epkl")
    rows = [[str(k)] + [format_summary(m[ENSEMBLE].get(key), 3) for key in keys] for k, m in summary.items()]
    return markdown_table(headers, rows)
