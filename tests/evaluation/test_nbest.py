"""proxy_end2.evaluation.nbest against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from proxy_end2.evaluation import nbest as M


def test_nbest_uniform_with_missing_hypotheses():
    values = np.array([[1.0, 2.0, 6.0], [4.0, np.nan, np.nan]])
    np.testing.assert_allclose(M.nbest_aggregate(values), [3.0, 4.0])
    np.testing.assert_allclose(M.nbest_weights(values), [[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])


def test_nbest_prob_weights_by_hand():
    values = np.array([[1.0, 3.0], [5.0, np.nan]])
    log_probs = np.array([[math.log(0.3), math.log(0.1)], [-7.0, np.nan]])
    # softmax over the hypotheses: 0.3 / 0.4 and 0.1 / 0.4
    np.testing.assert_allclose(M.nbest_weights(values, log_probs, "prob"), [[0.75, 0.25], [1.0, 0.0]])
    np.testing.assert_allclose(M.nbest_aggregate(values, log_probs, "prob"), [0.75 * 1 + 0.25 * 3, 5.0])


def test_nbest_prob_is_stable_and_falls_back():
    values = np.array([[1.0, 3.0], [2.0, 4.0]])
    log_probs = np.array([[-1000.0, -1000.0 - math.log(3)], [-np.inf, -np.inf]])  # tiny probabilities, 3:1
    np.testing.assert_allclose(M.nbest_aggregate(values, log_probs, "prob"), [0.75 * 1 + 0.25 * 3, 3.0])


def test_nbest_argument_errors():
    with pytest.raises(ValueError, match="log_probs"):
        M.nbest_aggregate(np.ones((2, 2)), None, "prob")
    with pytest.raises(ValueError, match="weighting"):
        M.nbest_aggregate(np.ones((2, 2)), None, "softmax")
    with pytest.raises(ValueError, match=r"\[N, n\]"):
        M.nbest_aggregate(np.ones(3))
