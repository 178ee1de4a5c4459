r"""Evaluation metrics (numpy, sklearn, sacrebleu): translation quality, OOD detection, prediction rejection and
N-best aggregation of sequence-level uncertainty measures.

Conventions: BLEU, WER, PRR and the values in the report are percentages; the AUC functions return sklearn's
fractions in [0, 1]. Uncertainty measures are "higher = more uncertain". No fairseq import.

Prediction rejection (sequence error detection), as defined here
----------------------------------------------------------------
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
from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = [
    "SENTENCE_BLEU_OPTIONS",
    "corpus_bleu",
    "corpus_bleu_signature",
    "sentence_bleu",
    "word_edit_distance",
    "sentence_wer",
    "corpus_wer",
    "sentence_errors",
    "roc_auc",
    "pr_auc",
    "ood_detection_scores",
    "RejectionCurves",
    "rejection_curves",
    "prediction_rejection_ratio",
    "nbest_weights",
    "nbest_aggregate",
    "rank_safe_scores",
]

#: Sentence BLEU as meant by the authors (sacrebleu 1.4 ``sentence_bleu`` defaults: floor smoothing with value
#: 1.1, effective order, 13a tokenisation), written with sacrebleu 2.x's explicit options. Note that floor
#: smoothing with 1.1 > 1 counts an n-gram order without any match as 1.1 matches (so a precision of
#: 110 / (number of n-grams) %), which can *raise* a sentence's score; kept for comparability.
SENTENCE_BLEU_OPTIONS = dict(smooth_method="floor", smooth_value=1.1, effective_order=True, tokenize="13a")


# ---------------------------------------------------------------------------------------------------------------
# quality


def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if len(hyps) == 0:
        raise ValueError("no sentences")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU (%) of detokenised hypotheses against one reference each: ``sacrebleu.corpus_bleu``."""
    import sacrebleu

    _check_pairs(hyps, refs)
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=tokenize).score)


def corpus_bleu_signature(tokenize: str = "13a") -> str:
    """sacrebleu's signature of :func:`corpus_bleu` (for the report)."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=tokenize)
    bleu.corpus_score(["x"], [["x"]])  # the signature needs the number of references, known after scoring
    return str(bleu.get_signature())


def sentence_bleu(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """Sentence BLEU (%) per pair, ``[N]``: sacrebleu 2.x ``sentence_bleu(hyp, [ref], smooth_method='floor',
    smooth_value=1.1)`` (effective order, 13a), see :data:`SENTENCE_BLEU_OPTIONS`; clipped to [0, 100]."""
    from sacrebleu.metrics import BLEU

    _check_pairs(hyps, refs)
    bleu = BLEU(**SENTENCE_BLEU_OPTIONS)  # one object: same scores as sacrebleu.sentence_bleu, much faster
    scores = np.array([bleu.sentence_score(h, [r]).score for h, r in zip(hyps, refs)], dtype=np.float64)
    return np.clip(scores, 0.0, 100.0)  # sacrebleu gives 100.00000000000004 for identical strings


def word_edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions all cost 1)."""
    n_ref, n_hyp = len(ref), len(hyp)
    if n_ref == 0 or n_hyp == 0:
        return n_ref + n_hyp
    vocab: Dict[str, int] = {}
    r = np.array([vocab.setdefault(w, len(vocab)) for w in ref])
    h = [vocab.setdefault(w, len(vocab)) for w in hyp]
    offsets = np.arange(n_ref + 1)
    prev = offsets.copy()  # distances from hyp[:0] to ref[:j]
    for i, w in enumerate(h, start=1):
        cand = np.empty(n_ref + 1, dtype=np.int64)
        cand[0] = i
        # substitution/match from prev[j-1], deletion of hyp word (insertion error) from prev[j]
        cand[1:] = np.minimum(prev[:-1] + (r != w), prev[1:] + 1)
        # left-to-right: cur[j] = min(cand[j], cur[j-1] + 1) = j + min_{k<=j}(cand[k] - k)
        prev = np.minimum.accumulate(cand - offsets) + offsets
    return int(prev[-1])


def sentence_wer(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """Sentence WER (%) per pair, ``[N]``: 100 * edits / reference words (whitespace-split, case-sensitive).
    An empty reference gives 0 for an empty hypothesis and 100 otherwise. Can exceed 100 (insertions)."""
    _check_pairs(hyps, refs)
    out = np.empty(len(hyps), dtype=np.float64)
    for k, (h, r) in enumerate(zip(hyps, refs)):
        rw, hw = r.split(), h.split()
        edits = word_edit_distance(rw, hw)
        out[k] = 100.0 * edits / len(rw) if rw else (0.0 if not hw else 100.0)
    return out


def corpus_wer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus WER (%) = 100 * total word edits / total reference words."""
    _check_pairs(hyps, refs)
    edits = sum(word_edit_distance(r.split(), h.split()) for h, r in zip(hyps, refs))
    words = sum(len(r.split()) for r in refs)
    if words == 0:
        return 0.0 if edits == 0 else float("inf")
    return 100.0 * edits / words


def sentence_errors(hyps: Sequence[str], refs: Sequence[str], quality: str = "bleu") -> np.ndarray:
    """Per-sentence error (%) for prediction rejection: ``100 - sentence BLEU`` or sentence WER."""
    if quality == "bleu":
        return 100.0 - sentence_bleu(hyps, refs)
    if quality == "wer":
        return sentence_wer(hyps, refs)
    raise ValueError(f"quality must be 'bleu' or 'wer', got {quality!r}")


# ---------------------------------------------------------------------------------------------------------------
# OOD detection


def rank_safe_scores(scores: np.ndarray) -> Tuple[np.ndarray, int]:
    """Replace non-finite scores so that rank-based metrics work: NaN and +inf rank above every finite value
    (treated as most uncertain), -inf below. Returns ``(scores, number replaced)``."""
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


# ---------------------------------------------------------------------------------------------------------------
# prediction rejection


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
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _retention_curve(errors_in_rejection_order: np.ndarray) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------------------------
# N-best aggregation


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
