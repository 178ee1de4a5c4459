"""Evaluation of fairseq-generate outputs with ``proxy_end2`` uncertainty lines (pure Python/numpy/sklearn/
sacrebleu/matplotlib; never imports fairseq).

* :mod:`.parsing`: :func:`read_generate_output` -> :class:`GenerateRun` (S-/T-/H-/D- and SU-/TU- lines);
* :mod:`.metrics`: BLEU, WER, OOD ROC-AUC/PR-AUC, prediction rejection ratio, N-best aggregation;
* :mod:`.plots`: rejection curves and ID-vs-OOD histograms (PNG);
* :mod:`.report`: :func:`evaluate` (the Python API) and the Markdown/JSON report;
* :mod:`.cli`: the ``proxy-end2-evaluate`` console script.
"""
from .metrics import (
    corpus_bleu,
    corpus_wer,
    nbest_aggregate,
    nbest_weights,
    pr_auc,
    prediction_rejection_ratio,
    rejection_curves,
    roc_auc,
    sentence_bleu,
    sentence_wer,
)
from .parsing import GenerateOutputError, GenerateRun, Hypothesis, Sentence, UncertaintyHeader, read_generate_output
from .report import evaluate, render_markdown, write_report

__all__ = [
    "GenerateOutputError",
    "GenerateRun",
    "Hypothesis",
    "Sentence",
    "UncertaintyHeader",
    "read_generate_output",
    "corpus_bleu",
    "corpus_wer",
    "sentence_bleu",
    "sentence_wer",
    "roc_auc",
    "pr_auc",
    "rejection_curves",
    "prediction_rejection_ratio",
    "nbest_weights",
    "nbest_aggregate",
    "evaluate",
    "render_markdown",
    "write_report",
]
