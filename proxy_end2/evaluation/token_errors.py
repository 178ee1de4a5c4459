"""Token-level error detection: how well each token-level uncertainty measure (the ``TU-`` lines) finds the
wrong tokens of the top-1 hypotheses, as Malinin & Gales did for speech recognition.

Labels
------
The tokens of a hypothesis are the pieces of its ``H-`` line (the model's units: sentencepiece pieces for
fairseq's speech-to-text data; fairseq-generate must run **without** ``--post-process``/``--remove-bpe``, so that
the ``H-`` line has one piece per ``TU-`` value). Each piece gets a label, 1 = error, 0 = correct:

* ``unit="word"`` (default): the pieces are grouped into words (a sentencepiece piece starting with ``▁`` starts a
  word; a subword-nmt piece ending in ``@@`` continues into the next; otherwise every token is a word), the
  hypothesis words are aligned to the reference words (the ``T-`` line split on whitespace), and every piece of a
  word that is not matched (substituted or inserted) is an error. These are the word errors that WER counts,
  given to every piece of the word;
* ``unit="piece"``: the reference is cut into pieces with the same sentencepiece model (``encode``) and the
  hypothesis pieces are aligned to the reference pieces, as the authors did (they aligned pieces with sclite).

Alignment: a hypothesis token is correct when it is matched in a longest common subsequence of hypothesis and
reference (``rapidfuzz.distance.Indel``): the alignment with the most matches, so the fewest tokens labelled
errors. Deleted reference tokens have no hypothesis token and no label. (sclite, which the authors used, aligns
with costs insertion = deletion = 3, substitution = 4, which also strongly favours matches; the two can label a
few tokens differently.)

Values: the ``TU-`` line of a hypothesis has L = pieces + 1 values (EOS last); the EOS value is dropped, as the
authors did, so that every remaining value belongs to a labelled piece.

Scores (errors are the positive class, higher measure = more likely wrong), pooled over all top-1 tokens of a
set: ROC-AUC (``sklearn.metrics.roc_auc_score``) and PR-AUC (``average_precision_score``; chance level = the
error rate). The authors reported the area under the precision-recall curve by the trapezoid rule
(``auc(recall, precision)``); average precision is the step-wise area and does not interpolate optimistically.

Units: the AUCs are fractions in [0, 1] here (the report shows %). Pure Python/numpy/sklearn/rapidfuzz; no
fairseq, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .ood import rank_safe_scores
from .records import GenerateRun

__all__ = [
    "TOKEN_UNITS",
    "SENTENCEPIECE_WORD_START",
    "SUBWORD_NMT_CONTINUATION",
    "word_ids_of_pieces",
    "words_of_pieces",
    "hypothesis_error_labels",
    "piece_error_labels",
    "TokenErrorData",
    "collect_token_errors",
    "token_error_detection",
]

TOKEN_UNITS = ("word", "piece")
SENTENCEPIECE_WORD_START = "\u2581"
SUBWORD_NMT_CONTINUATION = "@@"

Encoder = Callable[[str], Sequence[str]]


def word_ids_of_pieces(pieces: Sequence[str]) -> List[int]:
    """The index of the word each piece belongs to, ``[len(pieces)]`` (0-based, non-decreasing).

    sentencepiece (some piece contains ``▁``): a piece starting with ``▁`` starts a new word (so does the first
    piece). subword-nmt (some piece ends in ``@@``): a piece ending in ``@@`` continues into the next one.
    Otherwise every piece is a word."""
    if any(SENTENCEPIECE_WORD_START in p for p in pieces):
        ids, word = [], -1
        for k, piece in enumerate(pieces):
            if k == 0 or piece.startswith(SENTENCEPIECE_WORD_START):
                word += 1
            ids.append(word)
        return ids
    ids, word, continues = [], -1, False
    for piece in pieces:
        if not continues:
            word += 1
        ids.append(word)
        continues = piece.endswith(SUBWORD_NMT_CONTINUATION)
    return ids


def words_of_pieces(pieces: Sequence[str]) -> List[str]:
    """The words the pieces spell (``▁`` and ``@@`` markers removed): sentencepiece's and subword-nmt's own
    detokenisation, word by word."""
    words: List[str] = []
    for word_id, piece in zip(word_ids_of_pieces(pieces), pieces):
        text = piece.replace(SENTENCEPIECE_WORD_START, "")
        text = text[: -len(SUBWORD_NMT_CONTINUATION)] if text.endswith(SUBWORD_NMT_CONTINUATION) else text
        if word_id == len(words):
            words.append(text)
        else:
            words[word_id] += text
    return words


def hypothesis_error_labels(hypothesis: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """``[len(hypothesis)]`` int labels: 0 where the hypothesis token is matched in a longest common subsequence
    of the two token sequences (``rapidfuzz.distance.Indel.opcodes``), 1 elsewhere (substituted or inserted)."""
    from rapidfuzz.distance import Indel

    labels = np.ones(len(hypothesis), dtype=np.int64)
    for tag, _, _, dest_start, dest_end in Indel.opcodes(list(reference), list(hypothesis)).as_list():
        if tag == "equal":
            labels[dest_start:dest_end] = 0
    return labels


def piece_error_labels(pieces: Sequence[str], reference: str, unit: str = "word",
                       encode: Optional[Encoder] = None) -> np.ndarray:
    """``[len(pieces)]`` error labels of a hypothesis' pieces against the reference text (module docstring):
    ``unit="word"`` labels every piece with the label of its word; ``unit="piece"`` aligns the pieces to
    ``encode(reference)``."""
    if unit == "word":
        word_labels = hypothesis_error_labels(words_of_pieces(pieces), reference.split())
        return word_labels[np.asarray(word_ids_of_pieces(pieces), dtype=np.int64)] if pieces else word_labels
    if unit == "piece":
        if encode is None:
            raise ValueError("token errors at the piece level need the sentencepiece model that cut the "
                             "hypotheses (to cut the references the same way)")
        return hypothesis_error_labels(pieces, list(encode(reference)))
    raise ValueError(f"token error unit must be one of {TOKEN_UNITS}, got {unit!r}")


@dataclass
class TokenErrorData:
    """The pooled top-1 tokens of one set: labels ``[T]`` (1 = error) and each measure's values ``[T]`` (nats)."""

    labels: np.ndarray
    values: Dict[str, np.ndarray]
    sentences: int  # top-1 hypotheses used (those with at least one piece)


def collect_token_errors(run: GenerateRun, unit: str = "word", encode: Optional[Encoder] = None) -> TokenErrorData:
    """Labels and token measures of every top-1 hypothesis of ``run`` (read with ``load_token_values=True``),
    EOS values dropped. Raises ValueError when the run has no references or no TU values, or when a hypothesis'
    H- line does not have one piece per TU value (an output made with ``--post-process``/``--remove-bpe``)."""
    if not run.has_references:
        raise ValueError(f"{run.path}: token error detection needs the references (T- lines)")
    measures = run.header.token_measures if run.header is not None else ()
    if not measures or not any(s.hypotheses and s.hypotheses[0].tu for s in run.sentences):
        raise ValueError(f"{run.path}: no token-level uncertainty values (TU- lines, read with "
                         f"load_token_values=True); generate without --no-token-uncertainty")
    labels, values, used = [], {m: [] for m in measures}, 0
    for sentence in run.sentences:
        hyp = sentence.hypotheses[0]
        pieces = hyp.tokenized.split()
        length = len(next(iter(hyp.tu.values())))
        if length != len(pieces) + 1:
            raise ValueError(
                f"{run.path}: sample {sentence.id}: the TU- lines have {length} values (pieces + EOS) but the H- line "
                f"has {len(pieces)} tokens; token error detection needs H- lines in the model's units: run "
                f"fairseq-generate without --post-process/--remove-bpe")
        if not pieces:
            continue
        used += 1
        labels.append(piece_error_labels(pieces, sentence.reference or "", unit, encode))
        for m in measures:
            values[m].append(np.asarray(hyp.tu[m][:-1], dtype=np.float64))  # EOS value dropped
    empty = np.zeros(0)
    return TokenErrorData(np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
                          {m: np.concatenate(v) if v else empty for m, v in values.items()}, used)


def token_error_detection(data: TokenErrorData) -> Dict[str, object]:
    """``{"tokens", "errors", "error_rate", "sentences", "measures": {m: {"roc_auc", "pr_auc"}}}`` (AUCs as
    fractions, None when undefined: no error or no correct token). Non-finite values rank as most uncertain
    (NaN, +inf) or least (-inf)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = data.labels
    errors = int(labels.sum())
    defined = 0 < errors < labels.size
    measures = {}
    for name, values in data.values.items():
        scores, _ = rank_safe_scores(values)
        measures[name] = {"roc_auc": float(roc_auc_score(labels, scores)) if defined else None,
                          "pr_auc": float(average_precision_score(labels, scores)) if defined else None}
    return {"tokens": int(labels.size), "errors": errors, "sentences": data.sentences,
            "error_rate": errors / labels.size if labels.size else None, "measures": measures}
