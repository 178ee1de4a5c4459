"""The parsed form of one fairseq-generate output (:func:`.parsing.read_generate_output` builds it): the
sentences with their N-best hypotheses and, per hypothesis, the values of the ``SU-``/``TU-`` uncertainty lines.

Units: uncertainty values in nats; fairseq's hypothesis scores in base 2, as printed. Pure Python + numpy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = [
    "UncertaintyHeader",
    "Hypothesis",
    "Sentence",
    "GenerateRun",
    "NON_MEASURE_COLUMNS",
    "NO_UNCERTAINTY_HINT",
]

#: SU columns that are not uncertainty measures (``log_prob`` is only used for N-best weighting).
NON_MEASURE_COLUMNS = ("length", "log_prob")

NO_UNCERTAINTY_HINT = (
    "run fairseq-generate with --user-dir proxy_end2 --task translation_distillation (the stock CLI then prints "
    "the #SU-columns header and one SU- line per hypothesis; see docs/output-format.md)"
)

_BLEU_IN_RESULT = re.compile(r"\bBLEU4? = (-?[\d.]+)")


@dataclass(frozen=True)
class UncertaintyHeader:
    """The ``#SU-columns`` (and, if present, ``#TU-columns``) header of one run."""

    kind: str
    members: int
    columns: Tuple[str, ...]  # names of the SU value columns, in order (``length`` not included)
    token_measures: Tuple[str, ...] = ()  # measures with TU- lines (empty without a #TU-columns header)

    @property
    def measures(self) -> Tuple[str, ...]:
        """Sequence-level uncertainty measures: every SU column except ``length`` and ``log_prob``."""
        return tuple(c for c in self.columns if c not in NON_MEASURE_COLUMNS)

    def describe(self) -> str:
        """One line for error messages: kind, members and SU columns."""
        return f"kind={self.kind}, members={self.members}, columns={','.join(self.columns)}"


@dataclass
class Hypothesis:
    """One N-best hypothesis of a sentence, with the values of its SU-/TU- lines (if the output has them)."""

    rank: int  # 0-based N-best rank (order of the H- lines of the sentence)
    text: str  # detokenised hypothesis (D- line if present, else the H- line)
    score: float  # fairseq's score (base 2, as printed)
    tokenized: str = ""  # the H- text (after --remove-bpe/--post-process, before detokenisation)
    length: Optional[int] = None  # L from the SU line (target tokens incl. EOS)
    su: Dict[str, float] = field(default_factory=dict)  # SU column -> value (nats)
    tu: Dict[str, np.ndarray] = field(default_factory=dict)  # token measure -> [L] values


@dataclass
class Sentence:
    """One sample id: its S- (source) and T- (reference) text, None without those lines, and its hypotheses in
    rank order."""

    id: int
    source: Optional[str]
    reference: Optional[str]
    hypotheses: List[Hypothesis]


@dataclass
class GenerateRun:
    """One parsed fairseq-generate output. ``sentences`` are sorted by id (``sentences[i].id == i`` unless
    ``allow_missing_ids``)."""

    path: str  # the generate output (S-/T-/H-/D- lines)
    name: str
    sentences: List[Sentence]
    header: Optional[UncertaintyHeader]
    uncertainty_path: Optional[str] = None  # the separate file of the SU-/TU- lines, None when they are in `path`
    subset: Optional[str] = None  # from the final "Generate <subset> with beam=<B>: ..." line
    beam: Optional[int] = None
    fairseq_result: Optional[str] = None  # fairseq's scorer string, e.g. "BLEU4 = 41.23, 70.1/..."
    translated: Optional[int] = None  # from fairseq's "Translated N sentences" log line, when in the file
    warnings: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of sentences."""
        return len(self.sentences)

    @property
    def num_sentences(self) -> int:
        """Number of sentences (sample ids with hypotheses)."""
        return len(self.sentences)

    @property
    def has_references(self) -> bool:
        """Every sentence has a T- (reference) line."""
        return bool(self.sentences) and all(s.reference is not None for s in self.sentences)

    @property
    def has_uncertainty(self) -> bool:
        """There is a #SU-columns header and the hypotheses have SU values."""
        return self.header is not None and any(s.hypotheses and s.hypotheses[0].su for s in self.sentences)

    @property
    def max_nbest(self) -> int:
        """Largest number of hypotheses of a sentence."""
        return max((len(s.hypotheses) for s in self.sentences), default=0)

    @property
    def min_nbest(self) -> int:
        """Smallest number of hypotheses of a sentence (beam search may return fewer than --nbest)."""
        return min((len(s.hypotheses) for s in self.sentences), default=0)

    @property
    def fairseq_bleu(self) -> Optional[float]:
        """The BLEU fairseq printed on its final line (its own tokenisation; for reference only)."""
        m = _BLEU_IN_RESULT.search(self.fairseq_result or "")
        return float(m.group(1)) if m else None

    def references(self) -> List[str]:
        """The reference of every sentence; ValueError without T- lines."""
        if not self.has_references:
            raise ValueError(f"{self.path}: no reference (T-) lines")
        return [s.reference for s in self.sentences]  # type: ignore[misc]

    def hypotheses(self, rank: int = 0) -> List[str]:
        """Detokenised hypothesis of the given rank for every sentence (top-1 by default)."""
        return [s.hypotheses[rank].text if rank < len(s.hypotheses) else "" for s in self.sentences]

    def su_array(self, nbest: Optional[int] = None) -> np.ndarray:
        """``[N, n, C]`` float64 array of the SU columns (header order) of the top-n hypotheses, NaN where a
        sentence has fewer than n hypotheses."""
        if self.header is None:
            raise ValueError(f"{self.path}: no #SU-columns header; {NO_UNCERTAINTY_HINT}")
        n = self.max_nbest if nbest is None else int(nbest)
        cols = self.header.columns
        out = np.full((len(self.sentences), n, len(cols)), np.nan, dtype=np.float64)
        for i, sent in enumerate(self.sentences):
            for j, hyp in enumerate(sent.hypotheses[:n]):
                out[i, j] = [hyp.su.get(c, np.nan) for c in cols]
        return out

    def su_matrix(self, column: str, nbest: Optional[int] = None) -> np.ndarray:
        """``[N, n]`` values of one SU column (``length`` allowed), NaN-padded."""
        n = self.max_nbest if nbest is None else int(nbest)
        out = np.full((len(self.sentences), n), np.nan, dtype=np.float64)
        for i, sent in enumerate(self.sentences):
            for j, hyp in enumerate(sent.hypotheses[:n]):
                v = hyp.length if column == "length" else hyp.su.get(column)
                if v is not None:
                    out[i, j] = v
        return out
