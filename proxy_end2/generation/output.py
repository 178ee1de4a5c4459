"""The ``SU-`` / ``TU-`` lines printed for every re-scored hypothesis (``docs/output-format.md``), and the
writer object that owns their destination.

The reader is :mod:`proxy_end2.evaluation.parsing`; a round-trip test keeps the two in step.
"""
from __future__ import annotations

import os
import sys
from typing import List, Mapping, Optional, Sequence, TextIO

SEQUENCE_PREFIX = "SU-"
TOKEN_PREFIX = "TU-"
SEQUENCE_HEADER = "#SU-columns"
TOKEN_HEADER = "#TU-columns"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def format_header(kind: str, members: int, sequence_names: Sequence[str], token_names: Sequence[str],
                  token_level: bool = True) -> List[str]:
    """The header lines naming the value columns of the SU- lines and the measures of the TU- lines."""
    lines = ["\t".join([SEQUENCE_HEADER, f"kind={kind}", f"members={members}", *sequence_names])]
    if token_level:
        lines.append("\t".join([TOKEN_HEADER, f"kind={kind}", f"members={members}", *token_names]))
    return lines


def format_hypothesis(sample_id: int, rank: int, uncertainty: Mapping, sequence_names: Sequence[str],
                      token_names: Sequence[str], token_level: bool = True) -> List[str]:
    """``SU-<id>\\t<rank>\\t<L>\\t<values...>`` and, if ``token_level``, one ``TU-`` line per measure."""
    tokens = uncertainty["token"]
    length = len(next(iter(tokens.values()))) if tokens else 0
    seq = uncertainty["sequence"]
    lines = ["\t".join([f"{SEQUENCE_PREFIX}{sample_id}", str(rank), str(length),
                        *(_fmt(seq[name]) for name in sequence_names)])]
    if token_level:
        for name in token_names:
            values = " ".join(_fmt(v) for v in tokens[name].tolist())
            lines.append("\t".join([f"{TOKEN_PREFIX}{sample_id}", str(rank), name, values]))
    return lines


def uncertainty_path(results_path: Optional[str], gen_subset: str, explicit: Optional[str] = None) -> Optional[str]:
    """Where the uncertainty lines of a fairseq-generate run go: ``explicit`` (``--uncertainty-output``) if
    given, else ``<results_path>/uncertainty-<subset>.txt`` next to fairseq's ``generate-<subset>.txt``, else
    None (standard output, the stream fairseq-generate prints to without ``--results-path``)."""
    if explicit:
        return explicit
    if results_path:
        return os.path.join(results_path, f"uncertainty-{gen_subset}.txt")
    return None


class UncertaintyWriter:
    """Writes the header once, then the SU-/TU- lines of every re-scored hypothesis, to one destination.

    Args:
        path: a file to create (truncated if it exists) and write line by line, or None for standard output
            (looked up at every write, so that output captured by the caller is respected).
        token_level: also write the TU- lines.

    The file is line-buffered: every line is on disk once written, so an interrupted run keeps what it has
    printed. :meth:`close` closes a file the writer opened (never standard output); it is idempotent.
    """

    def __init__(self, path: Optional[str] = None, token_level: bool = True):
        self.path = path
        self.token_level = token_level
        self._file: Optional[TextIO] = None
        self._header_written = False
        self.closed = False

    def _stream(self) -> TextIO:
        if self.closed:
            raise ValueError(f"write to a closed UncertaintyWriter ({self.path or 'stdout'})")
        if self.path is None:
            return sys.stdout
        if self._file is None:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            self._file = open(self.path, "w", buffering=1, encoding="utf-8")
        return self._file

    def write(self, kind: str, members: int, sequence_names: Sequence[str], token_names: Sequence[str],
              items: Sequence[tuple]) -> None:
        """Write ``items`` = ``(sample_id, rank, uncertainty)`` triples (preceded by the header the first time)."""
        stream = self._stream()
        if not self._header_written:
            for line in format_header(kind, members, sequence_names, token_names, self.token_level):
                print(line, file=stream)
            self._header_written = True
        for sample_id, rank, uncertainty in items:
            for line in format_hypothesis(sample_id, rank, uncertainty, sequence_names, token_names,
                                          self.token_level):
                print(line, file=stream)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.closed = True
