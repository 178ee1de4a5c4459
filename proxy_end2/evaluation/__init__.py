"""Evaluation of fairseq-generate outputs with ``proxy_end2`` uncertainty lines (pure Python/numpy/sklearn/
sacrebleu/matplotlib; never imports fairseq).

* :mod:`.parsing`: :func:`read_generate_output` -> :class:`GenerateRun` (:mod:`.records`) from the S-/T-/H-/D-
  lines and the SU-/TU- lines (in the same file, or in a separate uncertainty file);
* :mod:`.quality` (BLEU, WER), :mod:`.ood` (ROC-AUC/PR-AUC), :mod:`.rejection` (prediction rejection ratio),
  :mod:`.nbest` (N-best aggregation); :mod:`.metrics` offers all of them under one name;
* :mod:`.token_errors`: token-level error detection (top-1 tokens aligned to the reference, ROC-AUC/PR-AUC of
  every TU- measure);
* :mod:`.report`: :func:`evaluate` (the Python API) and the JSON report; :mod:`.markdown`: its Markdown summary;
* :mod:`.plots`: rejection curves and ID-vs-OOD histograms (PNG);
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
from .markdown import render_markdown
from .parsing import (
    GenerateOutputError,
    GenerateRun,
    Hypothesis,
    Sentence,
    UncertaintyHeader,
    read_generate_output,
    uncertainty_path_for,
)
from .report import evaluate, write_report

__all__ = [
    "GenerateOutputError",
    "GenerateRun",
    "Hypothesis",
    "Sentence",
    "UncertaintyHeader",
    "read_generate_output",
    "uncertainty_path_for",
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
