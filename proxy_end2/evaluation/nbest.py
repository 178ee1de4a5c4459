"""N-best aggregation (numpy): one value per sentence from a sequence-level measure of its top-n hypotheses,
uniformly or probability weighted.

Units: the aggregate has the unit of the measure (nats); ``log_prob`` is ln of the sequence probability.
No fairseq import.
"""
from __future__ import annotations

import numpy as np

__all__ = ["nbest_weights", "nbest_aggregate"]


def nbest_weights(values, log_probs=None, weighting: str = "uniform") -> np.ndarray:
    r"""Weights ``[N, n]`` of the N-best hypotheses; 0 where a hypothesis is missing (``values`` NaN).

    * ``uniform``: :math:`w_{ij} = 1 / n_i` over the :math:`n_i` available hypotheses of sentence i;
    * ``prob``: :math:`w_{ij} = \exp(\ell_{ij}) / \sum_k \exp(\ell_{ik})` (softmax, temperature 1) over the
      available hypotheses, :math:`\ell` = the hypotheses' ``log_prob`` column (ln of the sequence probability).
      A -inf log-prob gets weight 0; a sentence whose available log-probs are all non-finite falls back to
      uniform weights.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be [N, n], got shape {v.shape}")
    avail = ~np.isnan(v)
    if weighting == "uniform":
        w = avail.astype(np.float64)
    elif weighting == "prob":
        if log_probs is None:
            raise ValueError("weighting='prob' needs log_probs")
        lp = np.asarray(log_probs, dtype=np.float64)
        if lp.shape != v.shape:
            raise ValueError(f"log_probs shape {lp.shape} differs from values shape {v.shape}")
        lp = np.where(avail & ~np.isnan(lp) & (lp != np.inf), lp, -np.inf)
        row_max = lp.max(axis=1, keepdims=True)
        ok = np.isfinite(row_max[:, 0])
        w = np.zeros_like(v)
        w[ok] = np.exp(lp[ok] - row_max[ok])  # [N_ok, n], max 1 per row
        w[~ok] = avail[~ok]  # fallback: uniform over the available ones
    else:
        raise ValueError(f"weighting must be 'uniform' or 'prob', got {weighting!r}")
    norm = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, w / np.where(norm > 0, norm, 1.0), 0.0)


def nbest_aggregate(values, log_probs=None, weighting: str = "uniform") -> np.ndarray:
    r"""Aggregate a sequence-level measure over each sentence's N-best list: ``[N, n] -> [N]``,
    :math:`u_i = \sum_j w_{ij} u_{ij}` with the weights of :func:`nbest_weights`.

    Args:
        values: ``[N, n]`` the measure of the top-n hypotheses (rank order), NaN where a sentence has fewer
            than n hypotheses (a NaN value is therefore treated as a missing hypothesis).
        log_probs: ``[N, n]`` the hypotheses' ``log_prob`` (nats), needed for ``weighting='prob'``.
        weighting: ``'uniform'`` (mean over the available hypotheses) or ``'prob'`` (softmax of log_probs).

    Returns ``[N]``; NaN for a sentence without any hypothesis.
    """
    v = np.asarray(values, dtype=np.float64)
    w = nbest_weights(v, log_probs, weighting)
    out = np.nansum(np.where(w > 0, v, 0.0) * w, axis=1)
    out[~np.any(~np.isnan(v), axis=1)] = np.nan
    return out
