r"""Uncertainty measures of students and of the ensemble, their rank agreement, and OOD detection.

Measures (nats, higher = more uncertain), from :mod:`proxy_end2.uncertainty`:

* ``total``: entropy of the mean prediction: :math:`\mathcal{H}[\bar p]` for the ensemble,
  :math:`\mathcal{H}[\alpha/\alpha_0]` for a Prior Network, :math:`\mathcal{H}[\mathrm{softmax}(z)]` for a
  softmax (EnD) student;
* ``mutual_information``: knowledge uncertainty (ensemble MI; closed-form Dirichlet MI);
* ``epkl``: expected pairwise KL (ensemble EPKL; :math:`(K-1)/\alpha_0` for a Dirichlet).

A softmax student has no distribution over distributions, so it has only ``total``: its knowledge
uncertainty is not defined and is reported as missing.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import Tensor

from proxy_end2.uncertainty import EnsembleStatistics, dirichlet_concentrations, dirichlet_uncertainty

from .objectives import is_dirichlet, model_offset

KNOWLEDGE_MEASURES: tuple[str, ...] = ("mutual_information", "epkl")
"""Measures of knowledge uncertainty (defined for the ensemble and for Dirichlet students)."""

MEASURES: tuple[str, ...] = ("total",) + KNOWLEDGE_MEASURES
"""All measures, in table order."""


def ensemble_measures(stats: EnsembleStatistics) -> dict[str, np.ndarray]:
    """The ensemble's :data:`MEASURES` per position, ``[N]`` float64 arrays."""
    u = stats.uncertainty()
    return {
        "total": u["entropy_of_expected"].double().numpy(),
        "mutual_information": u["mutual_information"].double().numpy(),
        "epkl": u["epkl"].double().numpy(),
    }


@torch.no_grad()
def student_measures(loss_name: str, logits: Tensor) -> dict[str, np.ndarray]:
    """The measures a student trained with ``loss_name`` has, per position, ``[N]`` float64 arrays.

    Dirichlet students (alpha = exp(z) + c, ``c`` of :func:`~.objectives.model_offset`): all
    :data:`MEASURES`, closed form. Softmax students: only ``total``.
    """
    if is_dirichlet(loss_name):
        alphas = dirichlet_concentrations(logits, model_offset=model_offset(loss_name))  # [N, K] float64
        u = dirichlet_uncertainty(alphas)
        return {
            "total": u["entropy_of_expected"].numpy(),
            "mutual_information": u["mutual_information"].numpy(),
            "epkl": u["epkl"].numpy(),
        }
    log_q = torch.log_softmax(logits.double(), dim=-1)  # [N, K]
    return {"total": -(log_q.exp() * log_q).sum(-1).numpy()}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two ``[N]`` arrays (NaN if either is constant or non-finite)."""
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def ood_roc_auc(id_values: np.ndarray, ood_values: np.ndarray) -> float:
    """ROC-AUC (fraction) of telling OOD (positive) from in-domain inputs by a score (higher = more OOD)."""
    labels = np.concatenate([np.zeros(len(id_values)), np.ones(len(ood_values))])
    scores = np.concatenate([id_values, ood_values])
    if not np.all(np.isfinite(scores)):
        return math.nan
    return float(roc_auc_score(labels, scores))


def ood_scores(measures_id: dict[str, np.ndarray], measures_ood: dict[str, np.ndarray]) -> dict[str, float]:
    """OOD ROC-AUC (``auc_<measure>``) of every measure present in both dicts (missing ones are absent)."""
    return {f"auc_{name}": ood_roc_auc(measures_id[name], measures_ood[name]) for name in MEASURES
            if name in measures_id and name in measures_ood}


def rank_correlations(measures: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Spearman correlation (``spearman_<measure>``) of each knowledge measure present in ``measures`` with
    the same measure of ``reference`` (the ensemble) on the same inputs."""
    return {f"spearman_{name}": spearman(measures[name], reference[name]) for name in KNOWLEDGE_MEASURES
            if name in measures}
