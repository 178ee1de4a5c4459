"""Out-of-domain detection by a sequence-level uncertainty measure (sklearn): ROC-AUC and PR-AUC with OOD as
the positive class and "higher score = more uncertain = more OOD".

Units: the AUC functions return sklearn's fractions in [0, 1] (the report shows %). No fairseq import.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

__all__ = ["rank_safe_scores", "roc_auc", "pr_auc", "ood_detection_scores"]


def rank_safe_scores(scores: np.ndarray) -> Tuple[np.ndarray, int]:
    """Replace non-finite scores so that rank-based metrics work: NaN and +inf rank above every finite value
    (treated as most uncertain), -inf below. Returns ``(scores, number replaced)``; the scores keep their
    unit (nats for the uncertainty measures)."""
    x = np.asarray(scores, dtype=np.float64).copy()
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad:
        finite = x[~bad]
        hi = (finite.max() if finite.size else 0.0)
        lo = (finite.min() if finite.size else 0.0)
        span = max(hi - lo, 1.0)
        x[np.isnan(x) | (x == np.inf)] = hi + span
        x[x == -np.inf] = lo - span
    return x, n_bad


def _ood_labels_scores(id_scores, ood_scores) -> Tuple[np.ndarray, np.ndarray]:
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError("OOD detection needs at least one in-domain and one out-of-domain score")
    labels = np.concatenate([np.zeros(id_scores.size), np.ones(ood_scores.size)])
    scores, _ = rank_safe_scores(np.concatenate([id_scores, ood_scores]))
    return labels, scores


def roc_auc(id_scores, ood_scores) -> float:
    """ROC-AUC (fraction) of separating OOD (positive class) from ID by the score (higher = more OOD): the
    probability that a random OOD sentence scores higher than a random ID one (ties count 1/2)."""
    from sklearn.metrics import roc_auc_score

    labels, scores = _ood_labels_scores(id_scores, ood_scores)
    return float(roc_auc_score(labels, scores))


def pr_auc(id_scores, ood_scores) -> float:
    """PR-AUC (fraction) with OOD as the positive class: sklearn's ``average_precision_score``
    (step-wise area under the precision-recall curve; chance level = the fraction of OOD sentences)."""
    from sklearn.metrics import average_precision_score

    labels, scores = _ood_labels_scores(id_scores, ood_scores)
    return float(average_precision_score(labels, scores))


def ood_detection_scores(id_scores, ood_scores) -> Dict[str, float]:
    """``{"roc_auc": ..., "pr_auc": ...}`` (fractions), OOD = positive class, higher score = more OOD."""
    return {"roc_auc": roc_auc(id_scores, ood_scores), "pr_auc": pr_auc(id_scores, ood_scores)}
