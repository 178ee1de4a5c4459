r"""Prediction rejection (sequence error detection, numpy): error-retention curves and the prediction rejection
ratio (PRR) of a sequence-level uncertainty measure.

Units: errors, curves and areas in % (of the per-sentence error), PRR in %. Uncertainty measures are
"higher = more uncertain". No fairseq import.

Definition
----------
Per sentence i = 1..N an *error* e_i >= 0 (``100 - sentence BLEU``, or sentence WER in %) and an uncertainty u_i.
Reject sentences, most uncertain first; a rejected sentence is handed to an oracle and gets error 0. After
rejecting k sentences (fraction r = k/N) the mean error over all N sentences is

.. math::  E(k) = \frac{1}{N} \sum_{i \notin R_k} e_i ,\qquad E(0) = \bar e,\quad E(N) = 0 .

The area under this error-retention curve (trapezoid over r in [0, 1]; lower is better) is computed for the
ordering by u (``AUC_unc``), for the oracle ordering by e (``AUC_orc``, the lowest possible area) and for a
random ordering (its expectation, the straight line from ē to 0: ``AUC_rnd = ē / 2``). Then

.. math::  \mathrm{PRR} = 100\,\frac{AUC_{rnd} - AUC_{unc}}{AUC_{rnd} - AUC_{orc}} \in [-100, 100],

100 for the oracle ordering, 0 (in expectation) for a random one, -100 for the reversed oracle. Sentences with
tied uncertainty are rejected in random order, in expectation (each gets the mean error of its tie group), so a
constant measure gives exactly 0. Undefined (NaN) when all errors are equal (e.g. every sentence BLEU = 100).

This is the authors' quantity (reference-method.md 10.4: ``PRR = (A_uns - A_rnd) / (A_orc - A_rnd)`` with
``A = 1 - AUC`` of quality-retention curves, quality = 100 - error) without their off-by-one grid (their
rejection fractions run over (i+1)/N for i = 0..N-1 and never include 0 rejected).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ood import rank_safe_scores

__all__ = ["RejectionCurves", "rejection_curves", "prediction_rejection_ratio"]


@dataclass
class RejectionCurves:
    """Error-retention curves (see the module docstring). All curves are ``[N + 1]``, mean error (%) over all
    N sentences after rejecting a fraction ``fraction[k] = k / N``."""

    fraction: np.ndarray
    uncertainty: np.ndarray
    random: np.ndarray
    oracle: np.ndarray
    auc_uncertainty: float
    auc_random: float
    auc_oracle: float
    prr: float  # %, NaN when undefined (all errors equal)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid-rule area under y(x) (unit of y times unit of x)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _retention_curve(errors_in_rejection_order: np.ndarray) -> np.ndarray:
    """``[N + 1]`` mean error (%) over all N sentences after rejecting the first k of the given order."""
    n = errors_in_rejection_order.size
    total = errors_in_rejection_order.sum()
    rejected = np.concatenate([[0.0], np.cumsum(errors_in_rejection_order)])  # [N + 1]
    curve = (total - rejected) / n
    curve[-1] = 0.0  # exact, whatever the rounding of the cumulative sum
    return np.maximum(curve, 0.0)


def rejection_curves(errors, uncertainty) -> RejectionCurves:
    """Error-retention curves and the prediction rejection ratio.

    Args:
        errors: ``[N]`` per-sentence error >= 0 (e.g. ``100 - sBLEU`` or sWER, in %); lower is better.
        uncertainty: ``[N]`` higher = more uncertain = rejected first. NaN/+inf count as most uncertain.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    u, _ = rank_safe_scores(np.asarray(uncertainty, dtype=np.float64).ravel())
    if e.size != u.size:
        raise ValueError(f"{e.size} errors but {u.size} uncertainties")
    if e.size == 0:
        raise ValueError("no sentences")
    if not np.all(np.isfinite(e)):
        raise ValueError("errors must be finite")
    n = e.size
    fraction = np.arange(n + 1, dtype=np.float64) / n

    # most uncertain first; each tie group contributes its mean error per rejected member (expected value
    # over the random order inside the group)
    order = np.argsort(-u, kind="stable")
    u_sorted, e_sorted = u[order], e[order]
    _, start, counts = np.unique(-u_sorted, return_index=True, return_counts=True)
    group_means = np.add.reduceat(e_sorted, start) / counts
    e_expected = np.repeat(group_means, counts)
    unc = _retention_curve(e_expected)
    orc = _retention_curve(np.sort(e)[::-1])
    rnd = e.mean() * (1.0 - fraction)

    auc_unc, auc_orc, auc_rnd = _trapezoid(unc, fraction), _trapezoid(orc, fraction), _trapezoid(rnd, fraction)
    denom = auc_rnd - auc_orc
    scale = max(abs(auc_rnd), 1e-300)
    prr = float("nan") if denom <= 1e-12 * scale else 100.0 * (auc_rnd - auc_unc) / denom
    return RejectionCurves(fraction, unc, rnd, orc, auc_unc, auc_rnd, auc_orc, prr)


def prediction_rejection_ratio(errors, uncertainty) -> float:
    """PRR (%) of an uncertainty measure for per-sentence errors (module docstring): 100 = oracle, 0 = random,
    -100 = reversed oracle, NaN if all errors are equal."""
    return rejection_curves(errors, uncertainty).prr
