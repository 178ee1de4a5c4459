"""Translation/recognition quality of detokenised hypotheses against one reference each (sacrebleu,
editdistance): corpus and sentence BLEU, corpus and sentence WER, and the per-sentence error that prediction
rejection ranks.

Units: BLEU and WER in % (WER can exceed 100 through insertions). No fairseq import.
"""
from __future__ import annotations

from typing import Sequence

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
]

#: Sentence BLEU as meant by the authors (sacrebleu 1.4 ``sentence_bleu`` defaults: floor smoothing with value
#: 1.1, effective order, 13a tokenisation), written with sacrebleu 2.x's explicit options. Note that floor
#: smoothing with 1.1 > 1 counts an n-gram order without any match as 1.1 matches (so a precision of
#: 110 / (number of n-grams) %), which can *raise* a sentence's score; kept for comparability.
SENTENCE_BLEU_OPTIONS = dict(smooth_method="floor", smooth_value=1.1, effective_order=True, tokenize="13a")


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
    """Levenshtein distance (number of edits) between two word sequences: substitutions, insertions and
    deletions all cost 1. ``editdistance.eval``, as in fairseq's own WER scorer."""
    import editdistance

    return int(editdistance.eval(ref, hyp))


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
    """Corpus WER (%) = 100 * total word edits / total reference words (inf when the references have no word
    but the hypotheses do)."""
    _check_pairs(hyps, refs)
    edits = sum(word_edit_distance(r.split(), h.split()) for h, r in zip(hyps, refs))
    words = sum(len(r.split()) for r in refs)
    if words == 0:
        return 0.0 if edits == 0 else float("inf")
    return 100.0 * edits / words


def sentence_errors(hyps: Sequence[str], refs: Sequence[str], quality: str = "bleu") -> np.ndarray:
    """Per-sentence error (%) for prediction rejection, ``[N]``: ``100 - sentence BLEU`` (``quality='bleu'``)
    or sentence WER (``'wer'``)."""
    if quality == "bleu":
        return 100.0 - sentence_bleu(hyps, refs)
    if quality == "wer":
        return sentence_wer(hyps, refs)
    raise ValueError(f"quality must be 'bleu' or 'wer', got {quality!r}")
