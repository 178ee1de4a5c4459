"""proxy_end2.evaluation.ood against hand-computed values and sklearn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from proxy_end2.evaluation import ood as M


def test_roc_auc_four_points_by_hand_and_sklearn():
    id_scores, ood_scores = [0.1, 0.4], [0.35, 0.8]
    # pairs (ood, id) with ood > id: (0.35, 0.1), (0.8, 0.1), (0.8, 0.4); not (0.35, 0.4) -> 3/4
    assert M.roc_auc(id_scores, ood_scores) == pytest.approx(0.75)
    assert M.roc_auc(id_scores, ood_scores) == pytest.approx(roc_auc_score([0, 0, 1, 1], id_scores + ood_scores))


def test_pr_auc_four_points_by_hand_and_sklearn():
    id_scores, ood_scores = [0.1, 0.4], [0.35, 0.8]
    # ranked: 0.8 (OOD) 0.4 (ID) 0.35 (OOD) 0.1 (ID); precision at the OOD hits: 1/1, 2/3 -> AP = (1 + 2/3) / 2
    assert M.pr_auc(id_scores, ood_scores) == pytest.approx((1 + 2 / 3) / 2)
    assert M.pr_auc(id_scores, ood_scores) == pytest.approx(
        average_precision_score([0, 0, 1, 1], id_scores + ood_scores))


def test_ood_ties_and_direction():
    assert M.roc_auc([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)  # ties count 1/2
    assert M.roc_auc([0.0, 1.0], [2.0, 3.0]) == 1.0  # higher = more OOD
    assert M.roc_auc([2.0, 3.0], [0.0, 1.0]) == 0.0


def test_ood_non_finite_scores_rank_as_most_uncertain():
    # NaN / +inf on an OOD sentence: counted as the most uncertain, -inf as the least
    assert M.roc_auc([0.1, 0.2], [np.nan, np.inf]) == 1.0
    assert M.roc_auc([-np.inf, 0.2], [0.1, 0.3]) == pytest.approx(0.75)
