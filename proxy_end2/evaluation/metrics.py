"""All evaluation metrics under one name (kept for code that imports ``proxy_end2.evaluation.metrics``).

The metrics live in one module per concept:

* :mod:`.quality`: corpus/sentence BLEU and WER, the per-sentence error of prediction rejection;
* :mod:`.ood`: OOD detection, ROC-AUC and PR-AUC;
* :mod:`.rejection`: error-retention curves and the prediction rejection ratio (definition there);
* :mod:`.nbest`: N-best aggregation of sequence-level measures.

Conventions: BLEU, WER, PRR and the values in the report are percentages; the AUC functions return sklearn's
fractions in [0, 1]. Uncertainty measures are "higher = more uncertain". No fairseq import.
"""
from .nbest import nbest_aggregate, nbest_weights
from .ood import ood_detection_scores, pr_auc, rank_safe_scores, roc_auc
from .quality import (
    SENTENCE_BLEU_OPTIONS,
    corpus_bleu,
    corpus_bleu_signature,
    corpus_wer,
    sentence_bleu,
    sentence_errors,
    sentence_wer,
    word_edit_distance,
)
from .rejection import RejectionCurves, prediction_rejection_ratio, rejection_curves

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
