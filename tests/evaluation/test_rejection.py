"""proxy_end2.evaluation.rejection against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from proxy_end2.evaluation import rejection as M


def test_prr_tiny_example_by_hand():
    errors = np.array([10.0, 0.0, 30.0, 20.0])
    unc = np.array([0.2, 0.1, 0.3, 0.4])  # rejection order: 3, 2, 0, 1 -> errors 20, 30, 10, 0
    c = M.rejection_curves(errors, unc)
    # mean error over all 4 sentences after k rejections: (60, 40, 10, 0, 0) / 4
    np.testing.assert_allclose(c.uncertainty, [15, 10, 2.5, 0, 0])
    np.testing.assert_allclose(c.oracle, [15, 7.5, 2.5, 0, 0])  # oracle order 30, 20, 10, 0
    np.testing.assert_allclose(c.random, [15, 11.25, 7.5, 3.75, 0])
    # trapezoids with step 1/4
    assert c.auc_uncertainty == pytest.approx(0.25 * (12.5 + 6.25 + 1.25 + 0))  # 5.0
    assert c.auc_oracle == pytest.approx(0.25 * (11.25 + 5 + 1.25 + 0))  # 4.375
    assert c.auc_random == pytest.approx(7.5)
    assert c.prr == pytest.approx(100 * (7.5 - 5.0) / (7.5 - 4.375))  # 80
    assert M.prediction_rejection_ratio(errors, unc) == pytest.approx(80.0)


def test_prr_oracle_and_reverse_oracle():
    rng = np.random.default_rng(0)
    errors = rng.uniform(0, 100, size=101)
    assert M.prediction_rejection_ratio(errors, errors) == pytest.approx(100.0)
    assert M.prediction_rejection_ratio(errors, 3 * errors + 7) == pytest.approx(100.0)  # only the order matters
    assert M.prediction_rejection_ratio(errors, -errors) == pytest.approx(-100.0)


def test_prr_random_is_zero_on_average():
    rng = np.random.default_rng(1)
    errors = rng.exponential(30.0, size=50)
    prrs = [M.prediction_rejection_ratio(errors, rng.permutation(50)) for _ in range(2000)]
    assert abs(np.mean(prrs)) < 2.0
    # the expectation over all orders is exactly the random line: equivalent check without sampling noise
    assert M.prediction_rejection_ratio(errors, np.zeros(50)) == pytest.approx(0.0, abs=1e-9)


def test_prr_ties_are_averaged():
    errors = np.array([0.0, 100.0, 50.0, 50.0])
    # sentences 1 and 2 tied as most uncertain: expected error of the first rejection = 75
    c = M.rejection_curves(errors, np.array([0.0, 1.0, 1.0, 0.5]))
    np.testing.assert_allclose(c.uncertainty, np.array([200, 125, 50, 0, 0]) / 4)


def test_prr_undefined_when_all_errors_equal():
    assert math.isnan(M.prediction_rejection_ratio(np.full(5, 40.0), np.arange(5)))
    assert math.isnan(M.prediction_rejection_ratio(np.zeros(5), np.arange(5)))  # every sentence perfect


def test_prr_bounds_random_cases():
    rng = np.random.default_rng(2)
    for _ in range(50):
        e = rng.uniform(0, 100, size=int(rng.integers(2, 30)))
        prr = M.prediction_rejection_ratio(e, rng.normal(size=e.size))
        assert -100 - 1e-9 <= prr <= 100 + 1e-9
