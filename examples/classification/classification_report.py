"""Seed summaries and the Markdown table of a classification task (one row per model)."""
from __future__ import annotations

from typing import Sequence

from distil_kit.objectives import LOSS_LABELS
from distil_kit.reporting import MISSING, aggregate, format_summary, markdown_table
from classification_experiment import ENSEMBLE, SINGLE_TEACHER

MODEL_LABELS = {ENSEMBLE: "ensemble (reference)", SINGLE_TEACHER: "single teacher (member 0)", **LOSS_LABELS}
#: In-domain columns: (header, flattened key, decimals).
ID_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("accuracy", "accuracy", 3),
    ("NLL", "nll", 3),
    ("ECE (15 bins)", "ece", 3),
    ("KL(p̄‖softmax z)", "kl_softmax", 3),
    ("top-1 agreement", "top1_agreement", 3),
    ("Spearman MI (in-domain)", "spearman_mutual_information", 3),
)
#: OOD measures reported per OOD set: (header suffix, flattened key suffix).
OOD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("AUC total", "auc_total"), ("AUC MI", "auc_mutual_information"), ("Spearman MI", "spearman_mutual_information"),
)


def summarise_seeds(records: Sequence[dict]) -> dict[str, dict]:
    """``summary[model][flat key]`` over seeds; models: ensemble, single teacher, one per loss (their keys
    are the flattened ``metrics``; the learning rate is under ``lr``)."""
    summary = {ENSEMBLE: aggregate([r[ENSEMBLE] for r in records]),
               SINGLE_TEACHER: aggregate([r[SINGLE_TEACHER] for r in records])}
    losses = dict.fromkeys(run["loss"] for r in records for run in r["runs"])
    for loss in losses:
        runs = [run for r in records for run in r["runs"] if run["loss"] == loss]
        summary[loss] = aggregate([{**run["metrics"], "lr": run["lr"]} for run in runs])
    return summary


def results_table(summary: dict[str, dict], ood_names: Sequence[str]) -> str:
    """Mean ± std over seeds; "-" where a quantity does not exist for the model (a softmax model has no
    knowledge uncertainty; the ensemble is the reference of the fidelity columns)."""
    headers = ["model", "lr"] + [h for h, _, _ in ID_COLUMNS]
    headers += [f"{name} {h}" for name in ood_names for h, _ in OOD_COLUMNS]
    rows = []
    for model, stats in summary.items():
        lr = stats.get("lr")
        row = [MODEL_LABELS[model], f"{lr['mean']:g}" if lr else MISSING]
        row += [format_summary(stats.get(key), digits) for _, key, digits in ID_COLUMNS]
        row += [format_summary(stats.get(f"ood.{name}.{key}")) for name in ood_names for _, key in OOD_COLUMNS]
        rows.append(row)
    return markdown_table(headers, rows)
