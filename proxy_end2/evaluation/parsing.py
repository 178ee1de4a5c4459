"""Read the output of ``fairseq-generate --user-dir proxy_end2``: fairseq's lines and our uncertainty lines,
from one stream or from two files.

The format is fairseq's own lines plus our uncertainty lines (``docs/output-format.md``)::

    #SU-columns<TAB>kind=prior_network<TAB>members=1<TAB>log_prob<TAB>score<TAB>...
    #TU-columns<TAB>kind=prior_network<TAB>members=1<TAB>token_nll<TAB>...
    S-<id><TAB><source>
    T-<id><TAB><reference>                       (absent without a target side)
    H-<id><TAB><score, base 2><TAB><hypothesis>   (one per N-best rank, in rank order)
    D-<id><TAB><score><TAB><detokenised hypothesis>
    P-<id><TAB><positional scores>
    SU-<id><TAB><rank><TAB><length><TAB><value1>...
    TU-<id><TAB><rank><TAB><measure><TAB><v_1> ... <v_L>
    ...
    Generate <subset> with beam=<B>: <scorer result>   (last line; only printed when there are references)

Where the lines are:

* fairseq-generate without ``--results-path``: all of them in one stream (stdout), one file to read;
* with ``--results-path DIR``: fairseq's lines in ``DIR/generate-<subset>.txt``, the headers and the
  ``SU-``/``TU-`` lines in ``DIR/uncertainty-<subset>.txt`` (found automatically next to the first);
* with ``--uncertainty-output FILE``: the headers and ``SU-``/``TU-`` lines in FILE (pass it as
  ``uncertainty_path``).

The lines of both files are parsed as one output (the uncertainty file may only have the headers and the
``SU-``/``TU-`` lines). Lines of different sample ids are interleaved in batch order; the ``SU-``/``TU-`` lines
of a hypothesis may come before or after its ``H-`` line (they are matched by ``(id, rank)``). Any other line
(fairseq's log lines, ``A-``/``I-``/``E-`` lines, progress output) is ignored.

Pure Python + numpy: no fairseq import.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .records import NO_UNCERTAINTY_HINT, NON_MEASURE_COLUMNS, GenerateRun, Hypothesis, Sentence, UncertaintyHeader

__all__ = [
    "GenerateOutputError",
    "UncertaintyHeader",
    "Hypothesis",
    "Sentence",
    "GenerateRun",
    "read_generate_output",
    "uncertainty_path_for",
    "NON_MEASURE_COLUMNS",
    "NO_UNCERTAINTY_HINT",
    "NO_REFERENCES_WARNING",
]

NO_REFERENCES_WARNING = "no T- (reference) lines: BLEU/WER and prediction rejection cannot be computed for this set"

_FAIRSEQ_LINE = re.compile(r"^([SHDTPAIEWV])-(\d+)(?:_\d+)?\t")
_GENERATE_LINE = re.compile(r"^Generate (\S+) with beam=(\d+): ?(.*)$")
_TRANSLATED_LINE = re.compile(r"Translated ([\d,]+) sentences")
_GENERATE_FILE = re.compile(r"^generate-(.+)\.txt$")
_SEPARATE_FILE_HINT = ("if they were written to another file, pass it as the uncertainty file: "
                       "proxy-end2-evaluate NAME=GENERATE_FILE,UNCERTAINTY_FILE or read_generate_output(..., "
                       "uncertainty_path=FILE)")

PathLike = Union[str, os.PathLike]


class GenerateOutputError(ValueError):
    """A fairseq-generate output that cannot be evaluated; the message names the file and line."""

    def __init__(self, path: PathLike, lineno: Optional[int], message: str):
        self.path = str(path)
        self.lineno = lineno
        self.reason = message
        where = f"{self.path}:{lineno}" if lineno is not None else self.path
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------------------------------------------------------
# records of the lines read, kept until every line is in


class _Where(NamedTuple):
    """A line of one of the files read (a str path, not a Path: a tuple of atoms is soon untracked by the garbage
    collector)."""

    path: str
    lineno: int

    def seen_from(self, other: "_Where") -> str:
        """``line N`` when in the same file as ``other``, else ``PATH:N``."""
        return f"line {self.lineno}" if self.path == other.path else f"{self.path}:{self.lineno}"


# The records kept per line carry their file and line number as two fields rather than one _Where: one tuple
# less per line for the garbage collector, whose full passes otherwise double the time to read a large output.
_WHERE = property(lambda record: _Where(record.path, record.lineno), doc="The file and line of the record.")


class _Header(NamedTuple):
    """A ``#SU-columns`` or ``#TU-columns`` header."""

    kind: str
    members: int
    names: Tuple[str, ...]  # SU value columns (without ``length``) or TU measures
    where: _Where


class _SuLine(NamedTuple):
    """An ``SU-`` line."""

    length: int  # L, target tokens including EOS
    values: List[float]  # in the order of the #SU-columns header (nats)
    path: str
    lineno: int
    where = _WHERE


class _TuLine(NamedTuple):
    """A ``TU-`` line."""

    values: Optional[np.ndarray]  # [L] (nats); None unless load_token_values
    count: int  # number of values on the line
    path: str
    lineno: int
    where = _WHERE


class _TextLine(NamedTuple):
    """An S- (source) or T- (reference) line of the generate output."""

    text: str
    lineno: int


class _GenerateLine(NamedTuple):
    """fairseq's final ``Generate <subset> with beam=<B>: <result>`` line."""

    subset: str
    beam: int
    result: str
    lineno: int  # in the generate output


def _duplicate_hint(first: _Where, second: _Where) -> str:
    """Why a line may be there twice (or a header differ), for the error message."""
    if first.path == second.path:
        return "two runs concatenated into one file?"
    return f"the same lines in both {first.path} and {second.path}, or the two files from different runs?"


def _short_list(values: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


# ---------------------------------------------------------------------------------------------------------------
# reading the lines


class _LineReader:
    """Collects the lines of one output (one or two files); :class:`_Assembler` checks and joins them."""

    def __init__(self, load_token_values: bool):
        self.load_token_values = load_token_values
        self.headers: Dict[str, _Header] = {}  # "SU" / "TU" -> header
        self.sources: Dict[int, _TextLine] = {}
        self.references: Dict[int, _TextLine] = {}
        self.hyps: Dict[int, List[Hypothesis]] = {}
        self.hyp_lines: Dict[int, List[int]] = {}  # the H- line of each hypothesis, in rank order (generate file)
        self.detok_count: Dict[int, int] = {}
        self.su: Dict[Tuple[int, int], _SuLine] = {}  # (id, rank) -> SU line
        self.tu: Dict[Tuple[int, int, str], _TuLine] = {}  # (id, rank, measure) -> TU line
        self.first_id_line: Dict[int, int] = {}  # the first fairseq line of each sample id (generate file)
        self.current_id: Optional[int] = None  # sample whose fairseq block we are in
        self.generate_line: Optional[_GenerateLine] = None
        self.translated: Optional[int] = None  # from fairseq's "Translated N sentences" log line
        self.last_content_line: Dict[str, int] = {}  # file -> its last S-/T-/H-/D-/SU-/TU- line
        self.file = ""  # the file being read
        self.uncertainty_only = False  # it is the uncertainty file: no fairseq lines in it
        self.last_content = 0  # its last S-/T-/H-/D-/SU-/TU- line so far

    def at(self, lineno: int) -> _Where:
        """Line ``lineno`` of the file being read."""
        return _Where(self.file, lineno)

    def error(self, lineno: int, message: str) -> GenerateOutputError:
        return GenerateOutputError(self.file, lineno, message)

    def earlier(self, first: _Where, lineno: int) -> str:
        """``line N`` or ``PATH:N`` of an earlier line, and why it may be there, for an error at ``lineno``."""
        return f"{first.seen_from(self.at(lineno))} ({_duplicate_hint(first, self.at(lineno))})"

    def read_file(self, path: Path, uncertainty_only: bool = False) -> None:
        """Read every line of ``path``: the generate output, or (``uncertainty_only``) the uncertainty file, which
        must not have fairseq's S-/T-/H-/D-/P- or final ``Generate`` lines."""
        if path.is_dir():
            raise GenerateOutputError(path, None, "is a directory, expected a fairseq-generate output file")
        self.current_id = None
        self.file = str(path)
        self.uncertainty_only = uncertainty_only
        self.last_content = 0
        with open(path, "r", encoding="utf-8", errors="replace", newline="\n") as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.rstrip("\n").rstrip("\r")
                if line:
                    self.parse_line(line, lineno)
        if self.last_content:
            self.last_content_line[self.file] = self.last_content

    def parse_line(self, line: str, lineno: int) -> None:
        """Dispatch a non-empty line by its prefix; lines of no interest are ignored."""
        if line[0] == "#":
            if line.startswith("#SU-columns"):
                self.parse_header(line, lineno, "SU")
            elif line.startswith("#TU-columns"):
                self.parse_header(line, lineno, "TU")
            return
        if line.startswith("SU-"):
            self.parse_su(line, lineno)
            return
        if line.startswith("TU-"):
            self.parse_tu(line, lineno)
            return
        m = _FAIRSEQ_LINE.match(line)
        if m is not None:
            if self.uncertainty_only:
                raise self.fairseq_line_error(line, lineno)
            self.parse_fairseq(m.group(1), int(m.group(2)), line, lineno)
            return
        m = _GENERATE_LINE.match(line)
        if m is not None:
            if self.uncertainty_only:
                raise self.fairseq_line_error(line, lineno)
            self.generate_line = _GenerateLine(m.group(1), int(m.group(2)), m.group(3), lineno)
            return
        m = _TRANSLATED_LINE.search(line)
        if m is not None:
            self.translated = int(m.group(1).replace(",", ""))

    def fairseq_line_error(self, line: str, lineno: int) -> GenerateOutputError:
        return self.error(lineno, f"fairseq's line {line[:60]!r} in the uncertainty file, which should only have "
                                  f"the #SU-columns/#TU-columns headers and SU-/TU- lines (is it the generate output?)")

    # -- uncertainty lines -------------------------------------------------------------------------------------
    def parse_header(self, line: str, lineno: int, which: str) -> None:
        """A ``#SU-columns`` (``which='SU'``) or ``#TU-columns`` header; a repeated one must be identical."""
        fields = line.split("\t")
        if len(fields) < 3 or not fields[1].startswith("kind=") or not fields[2].startswith("members="):
            raise self.error(lineno, f"malformed #{which}-columns header (expected "
                                     f"'#{which}-columns<TAB>kind=...<TAB>members=M<TAB>name...'): {line!r}")
        kind = fields[1][len("kind="):]
        try:
            members = int(fields[2][len("members="):])
        except ValueError:
            raise self.error(lineno, f"malformed members= in #{which}-columns header: {fields[2]!r}") from None
        names = tuple(fields[3:])
        if which == "SU" and names and names[0] == "length":
            names = names[1:]  # tolerate a header that also names the length column
        if not names:
            raise self.error(lineno, f"#{which}-columns header names no column")
        if len(set(names)) != len(names):
            raise self.error(lineno, f"#{which}-columns header names a column twice: {list(names)}")
        new = _Header(kind, members, names, self.at(lineno))
        old = self.headers.get(which)
        if old is None:
            self.headers[which] = new
        elif old[:3] != new[:3]:
            raise self.error(lineno, f"second #{which}-columns header differs from the one on "
                                     f"{self.earlier(old.where, lineno)}")

    def parse_su(self, line: str, lineno: int) -> None:
        """``SU-<id><TAB><rank><TAB><length><TAB><values...>``, one value per column of the header."""
        header = self.headers.get("SU")
        if header is None:
            raise self.error(lineno, "SU- line before any #SU-columns header (the header must come before the "
                                     "first SU- line; is this output cut at the front?)")
        fields = line.split("\t")
        columns = header.names
        if len(fields) != 3 + len(columns):
            raise self.error(lineno, f"SU- line has {len(fields) - 3} value columns, the #SU-columns header on "
                                     f"{header.where.seen_from(self.at(lineno))} names {len(columns)} "
                                     f"({', '.join(columns)})")
        try:
            sid, rank, length = int(fields[0][3:]), int(fields[1]), int(fields[2])
            values = [float(v) for v in fields[3:]]
        except ValueError as exc:
            raise self.error(lineno, f"malformed SU- line ({exc}): {line[:200]!r}") from None
        if rank < 0 or length < 0:
            raise self.error(lineno, f"negative rank or length in SU- line: {line[:200]!r}")
        first = self.su.get((sid, rank))
        if first is not None:
            raise self.error(lineno, f"duplicate SU- line for (id={sid}, rank={rank}); first one on "
                                     f"{self.earlier(first.where, lineno)}")
        self.su[(sid, rank)] = _SuLine(length, values, self.file, lineno)
        self.last_content = lineno

    def parse_tu(self, line: str, lineno: int) -> None:
        """``TU-<id><TAB><rank><TAB><measure><TAB><v_1> ... <v_L>``; the values are only counted unless
        ``load_token_values``."""
        header = self.headers.get("TU")
        if header is None:
            raise self.error(lineno, "TU- line before any #TU-columns header")
        fields = line.split("\t")
        if len(fields) != 4:
            raise self.error(lineno, f"malformed TU- line (expected TU-<id><TAB><rank><TAB><measure><TAB>"
                                     f"<values>): {line[:200]!r}")
        try:
            sid, rank = int(fields[0][3:]), int(fields[1])
        except ValueError:
            raise self.error(lineno, f"malformed TU- line: {line[:200]!r}") from None
        measure = fields[2]
        if measure not in header.names:
            raise self.error(lineno, f"TU- measure {measure!r} is not in the #TU-columns header "
                                     f"({', '.join(header.names)})")
        first = self.tu.get((sid, rank, measure))
        if first is not None:
            raise self.error(lineno, f"duplicate TU- line for (id={sid}, rank={rank}, {measure}); first one on "
                                     f"{self.earlier(first.where, lineno)}")
        tokens = fields[3].split()
        values = None
        if self.load_token_values:
            try:
                values = np.array(tokens, dtype=np.float64)
            except ValueError:
                raise self.error(lineno, f"non-numeric value in TU- line: {line[:200]!r}") from None
        self.tu[(sid, rank, measure)] = _TuLine(values, len(tokens), self.file, lineno)
        self.last_content = lineno

    # -- fairseq lines -----------------------------------------------------------------------------------------
    def parse_fairseq(self, tag: str, sid: int, line: str, lineno: int) -> None:
        """A fairseq ``<tag>-<id>`` line: S-, T-, H- and D- are kept, the others only mark the sample's block."""
        self.first_id_line.setdefault(sid, lineno)
        if tag in "ST":
            self.parse_text(self.sources if tag == "S" else self.references, tag, sid, line, lineno)
        elif tag == "H":
            self.parse_hypothesis(sid, line, lineno)
        elif tag == "D":
            self.parse_detokenized(sid, line, lineno)
        self.current_id = sid
        self.last_content = lineno

    def parse_text(self, store: Dict[int, _TextLine], tag: str, sid: int, line: str, lineno: int) -> None:
        """An S- or T- line: at most one per sample id."""
        first = store.get(sid)
        if first is not None:
            raise self.error(lineno, f"second {tag}-{sid} line (first on line {first.lineno}): duplicate sample id "
                                     f"(two runs concatenated into one file?)")
        store[sid] = _TextLine(line.split("\t", 1)[1], lineno)

    def parse_hypothesis(self, sid: int, line: str, lineno: int) -> None:
        """An H- line: the next hypothesis (rank) of the sample; its H- lines must come in one block."""
        if sid in self.hyps and self.current_id != sid:
            raise self.error(
                lineno,
                f"H-{sid} line after the hypotheses of other sentences, although sample {sid} already has "
                f"{len(self.hyps[sid])} (first on line {self.hyp_lines[sid][0]}): duplicate (id, rank) (two runs "
                f"concatenated into one file?)",
            )
        fields = line.split("\t", 2)
        try:
            score = float(fields[1]) if len(fields) > 1 else math.nan
        except ValueError:
            raise self.error(lineno, f"malformed H- line (score is not a number): {line[:200]!r}") from None
        text = fields[2] if len(fields) > 2 else ""
        hyps = self.hyps.setdefault(sid, [])
        hyps.append(Hypothesis(rank=len(hyps), text=text, score=score, tokenized=text))
        self.hyp_lines.setdefault(sid, []).append(lineno)

    def parse_detokenized(self, sid: int, line: str, lineno: int) -> None:
        """A D- line: the detokenised text of the sample's next hypothesis."""
        hyps = self.hyps.get(sid, [])
        rank = self.detok_count.get(sid, 0)
        if rank >= len(hyps):
            raise self.error(lineno, f"D-{sid} line without a preceding H-{sid} line of the same rank")
        fields = line.split("\t", 2)
        hyps[rank].text = fields[2] if len(fields) > 2 else ""
        self.detok_count[sid] = rank + 1


# ---------------------------------------------------------------------------------------------------------------
# checking and joining them


class _Assembler:
    """Checks the lines of a :class:`_LineReader` for completeness and consistency and builds the
    :class:`GenerateRun`. Errors name the file and line; errors about the whole output name the generate file."""

    def __init__(self, lines: _LineReader, path: Path, uncertainty_path: Optional[Path],
                 looked_for: Optional[Path]):
        self.lines = lines
        self.path = path  # the generate output
        self.uncertainty_path = uncertainty_path  # the separate uncertainty file read, if any
        self.looked_for = looked_for  # the sibling uncertainty file looked for and not found, if any
        self.warnings: List[str] = []

    def at(self, lineno: int) -> _Where:
        """Line ``lineno`` of the generate output (where every fairseq line is)."""
        return _Where(str(self.path), lineno)

    def error(self, where: Optional[_Where], message: str) -> GenerateOutputError:
        if where is None:
            return GenerateOutputError(self.path, None, message)
        return GenerateOutputError(where.path, where.lineno, message)

    def build(self, name: Optional[str], require_uncertainty: bool, allow_missing_ids: bool) -> GenerateRun:
        """Check everything, attach the uncertainty values to the hypotheses, return the run."""
        self.check_samples()
        ids = self.check_complete(allow_missing_ids)
        header = self.attach_uncertainty(ids, require_uncertainty)
        lines = self.lines
        sentences = [
            Sentence(
                id=sid,
                source=lines.sources[sid].text if sid in lines.sources else None,
                reference=lines.references[sid].text if sid in lines.references else None,
                hypotheses=lines.hyps[sid],
            )
            for sid in ids
        ]
        end = lines.generate_line
        if not lines.references:
            self.warnings.append(NO_REFERENCES_WARNING)
        return GenerateRun(
            path=str(self.path),
            name=name if name is not None else _default_name(self.path),
            sentences=sentences,
            header=header,
            uncertainty_path=None if self.uncertainty_path is None else str(self.uncertainty_path),
            subset=None if end is None else end.subset,
            beam=None if end is None else end.beam,
            fairseq_result=None if end is None else end.result,
            translated=lines.translated,
            warnings=self.warnings,
        )

    # -- sentences -------------------------------------------------------------------------------------------
    def check_samples(self) -> None:
        """Hypotheses exist, every sample with S-/T- lines has some, references are given for all or none."""
        lines = self.lines
        if not lines.hyps:
            if lines.sources or lines.references:
                raise self.error(None, "S-/T- lines but no H- (hypothesis) line: was fairseq-generate run with "
                                       "--quiet, or is the file cut short?")
            raise self.error(None, "no H- (hypothesis) line: not a fairseq-generate output, or empty")
        for sid in sorted(set(lines.sources) | set(lines.references)):
            if sid not in lines.hyps:
                raise self.error(self.at(lines.first_id_line[sid]),
                                 f"sample {sid} has S-/T- lines but no H- line (file cut short?)")
        if lines.references and len(lines.references) != len(lines.hyps):
            missing = sorted(set(lines.hyps) - set(lines.references))
            raise self.error(self.at(lines.first_id_line[missing[0]]),
                             f"{len(missing)} sentence(s) have no T- (reference) line although others do: "
                             f"ids {_short_list(missing)}")

    def check_complete(self, allow_missing_ids: bool) -> List[int]:
        """Sample ids 0..N-1, the final ``Generate`` line, fairseq's sentence count; returns the sorted ids."""
        lines = self.lines
        ids = sorted(lines.hyps)
        n_expected = max(ids[-1] + 1, lines.translated or 0)
        missing = sorted(set(range(n_expected)) - set(ids))
        if missing:
            self.fail_or_warn(
                allow_missing_ids,
                f"{len(missing)} of {n_expected} sample ids are missing: {_short_list(missing)}. Sample ids must be "
                f"0..N-1; fairseq-fixed silently drops the last sentences of a split unless fairseq-generate gets "
                f"--required-batch-size-multiple 1 (also check --skip-invalid-size-inputs-valid-test and "
                f"--max-len-a/--max-source-positions filtering), or the file is cut short")
        if lines.references and lines.generate_line is None:
            last = lines.last_content_line.get(str(self.path))
            raise self.error(
                None if last is None else self.at(last),
                "no final 'Generate <subset> with beam=<B>: ...' line although the file has T- lines: the output "
                "looks truncated (fairseq-generate interrupted, or still running?)",
            )
        if not lines.references and lines.generate_line is None and lines.translated is None:
            self.warnings.append("no T- (reference) lines, so fairseq printed no final 'Generate ... with beam=' "
                                 "line and completeness cannot be checked beyond the contiguity of the sample ids")
        if lines.translated is not None and lines.translated != len(ids):
            msg = (f"fairseq's log says it translated {lines.translated} sentences, the file has hypotheses for "
                   f"{len(ids)}")
            hint = " (file cut short?)" if lines.translated > len(ids) else " (outputs of several runs in one file?)"
            self.fail_or_warn(allow_missing_ids, msg, hint)
        return ids

    def fail_or_warn(self, warn: bool, message: str, error_hint: str = "") -> None:
        """Raise ``message + error_hint`` about the whole output, or, with ``warn``, keep ``message`` as a warning."""
        if not warn:
            raise self.error(None, message + error_hint)
        self.warnings.append(message)

    # -- uncertainty -----------------------------------------------------------------------------------------
    def where_uncertainty_was_looked_for(self) -> str:
        """``in FILE...``: the files read for uncertainty lines, for an error message."""
        if self.uncertainty_path is not None:
            return f"in {self.path} and the uncertainty file {self.uncertainty_path}"
        if self.looked_for is not None:
            return (f"in {self.path}, and there is no uncertainty file {self.looked_for} (where fairseq-generate "
                    f"--results-path puts them; {_SEPARATE_FILE_HINT})")
        return f"in {self.path} ({_SEPARATE_FILE_HINT})"

    def attach_uncertainty(self, ids: List[int], require_uncertainty: bool) -> Optional[UncertaintyHeader]:
        """The header, with each hypothesis' SU values (and TU values when loaded) set; None without header."""
        su_header, tu_header = self.lines.headers.get("SU"), self.lines.headers.get("TU")
        if su_header is None:
            if require_uncertainty:
                raise self.error(None, f"no #SU-columns header and no SU- line "
                                       f"{self.where_uncertainty_was_looked_for()}: {NO_UNCERTAINTY_HINT}")
            return None
        if tu_header is not None and tu_header[:2] != su_header[:2]:
            raise self.error(tu_header.where, f"#TU-columns header has another kind/members than the "
                                              f"#SU-columns header on {su_header.where.seen_from(tu_header.where)}")
        self.attach_su(ids, su_header.names)
        if tu_header is not None:
            self.attach_tu(ids, tu_header.names)
        return UncertaintyHeader(kind=su_header.kind, members=su_header.members, columns=su_header.names,
                                 token_measures=() if tu_header is None else tu_header.names)

    def missing_lines_hint(self, count: int, total: int) -> str:
        """How many hypotheses lack uncertainty lines, and the likely cause given where they were read from."""
        if self.uncertainty_path is not None:
            return (f" ({count} of {total} have none): the uncertainty file {self.uncertainty_path} may be cut "
                    f"short (fairseq-generate interrupted, or still running?) or belong to another run")
        if self.looked_for is not None:
            return (f" ({count} of {total} have none; file cut short, or is the uncertainty file "
                    f"{self.looked_for} missing?)")
        return (f" ({count} of {total} have none; file cut short, or generated without --user-dir proxy_end2, or "
                f"the uncertainty lines are in a separate file?)")

    def hypotheses(self, ids: List[int]) -> Iterator[Tuple[int, Hypothesis, int]]:
        """(id, hypothesis, line number of its H- line) of every hypothesis, in id and rank order."""
        for sid in ids:
            yield from ((sid, hyp, h_line) for hyp, h_line in zip(self.lines.hyps[sid], self.lines.hyp_lines[sid]))

    def attach_su(self, ids: List[int], columns: Tuple[str, ...]) -> None:
        """Every hypothesis gets the length and values of its SU- line; every SU- line must have a hypothesis."""
        lines = self.lines
        missing = [(sid, hyp, h_line) for sid, hyp, h_line in self.hypotheses(ids) if (sid, hyp.rank) not in lines.su]
        if missing:
            sid, hyp, h_line = missing[0]
            total = sum(len(lines.hyps[s]) for s in ids)
            raise self.error(self.at(h_line), f"hypothesis (id={sid}, rank={hyp.rank}) has no SU- line"
                                              + self.missing_lines_hint(len(missing), total))
        for sid in ids:
            for hyp in lines.hyps[sid]:
                su = lines.su.pop((sid, hyp.rank))
                hyp.length = su.length
                hyp.su = dict(zip(columns, su.values))
        if lines.su:
            (sid, rank), su = next(iter(lines.su.items()))  # the first in the files (dicts keep reading order)
            raise self.error(su.where, f"SU- line for (id={sid}, rank={rank}) without a matching hypothesis "
                                       f"(sample {sid} has {len(lines.hyps.get(sid, []))} H- line(s))")

    def attach_tu(self, ids: List[int], measures: Tuple[str, ...]) -> None:
        """Every TU- line must match a hypothesis and its length; every hypothesis needs one per measure."""
        lines = self.lines
        for (sid, rank, measure), tu in lines.tu.items():  # in reading order: the first error in the files
            hyps = lines.hyps.get(sid, [])
            if rank >= len(hyps):
                raise self.error(tu.where, f"TU- line for (id={sid}, rank={rank}) without a matching hypothesis")
            hyp = hyps[rank]
            if tu.count != hyp.length:
                raise self.error(tu.where, f"TU- line for (id={sid}, rank={rank}, {measure}) has {tu.count} "
                                           f"values, its SU- line says length {hyp.length}")
            if tu.values is not None:
                hyp.tu[measure] = tu.values
        missing = [(sid, hyp, h_line, m) for sid, hyp, h_line in self.hypotheses(ids)
                   for m in measures if (sid, hyp.rank, m) not in lines.tu]
        if missing:
            sid, hyp, h_line, measure = missing[0]
            total = len(measures) * sum(len(lines.hyps[s]) for s in ids)
            raise self.error(self.at(h_line), f"hypothesis (id={sid}, rank={hyp.rank}) has no TU- line for "
                                              f"{measure}, which the #TU-columns header names"
                                              + self.missing_lines_hint(len(missing), total))


def _default_name(path: Path) -> str:
    """The set name of a file: ``generate-test.txt`` -> ``test``, ``perm.out`` -> ``perm``."""
    stem = path.name
    for suffix in (".txt", ".out", ".log"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    if stem.startswith("generate-") and len(stem) > len("generate-"):
        stem = stem[len("generate-"):]
    return stem or path.name


# ---------------------------------------------------------------------------------------------------------------
# API


def uncertainty_path_for(path: PathLike) -> Optional[Path]:
    """Where fairseq-generate ``--results-path DIR`` with ``--user-dir proxy_end2`` puts the uncertainty lines of
    ``DIR/generate-<subset>.txt``: ``DIR/uncertainty-<subset>.txt``; None for a file not named that way."""
    path = Path(path)
    m = _GENERATE_FILE.match(path.name)
    return None if m is None else path.with_name(f"uncertainty-{m.group(1)}.txt")


def read_generate_output(
    path: PathLike,
    name: Optional[str] = None,
    *,
    uncertainty_path: Optional[PathLike] = None,
    require_uncertainty: bool = True,
    allow_missing_ids: bool = False,
    load_token_values: bool = True,
) -> GenerateRun:
    """Parse one fairseq-generate output: one file, or a generate file and its uncertainty file.

    Args:
        path: fairseq-generate's stdout (every line in one file), or ``<results-path>/generate-<subset>.txt``.
        name: the set's name (default: the file name without ``generate-`` and ``.txt``).
        uncertainty_path: the file with the ``#SU-columns``/``#TU-columns`` headers and the ``SU-``/``TU-``
            lines when they are not in ``path`` (``--uncertainty-output FILE``), read in addition to ``path``.
            Default: ``uncertainty-<subset>.txt`` next to a ``path`` named ``generate-<subset>.txt``, if that
            file exists (``--results-path``), else none.
        require_uncertainty: raise if there is no ``#SU-columns`` header / ``SU-`` line (a plain
            fairseq-generate output); with False such an output parses with ``header=None``.
        allow_missing_ids: turn "sample ids not contiguous 0..N-1" (and a sentence count that differs from
            fairseq's "Translated N sentences" log line) into a warning instead of an error.
        load_token_values: parse the numbers of the ``TU-`` lines into ``Hypothesis.tu`` (False: only check
            their count, which is faster when only sequence-level measures are needed).

    Raises:
        FileNotFoundError: ``path`` or an explicit ``uncertainty_path`` does not exist.
        GenerateOutputError (a ValueError): a malformed, inconsistent or truncated output; the message names the
            file and, where it applies, the line number.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    looked_for = None
    if uncertainty_path is None:
        sibling = uncertainty_path_for(path)
        if sibling is not None and sibling.exists():
            uncertainty_path = sibling
        else:
            looked_for = sibling
    elif not Path(uncertainty_path).exists():
        raise FileNotFoundError(f"{uncertainty_path}: no such file (the uncertainty file of {path})")
    lines = _LineReader(load_token_values)
    lines.read_file(path)
    if uncertainty_path is not None:
        lines.read_file(Path(uncertainty_path), uncertainty_only=True)
    assembler = _Assembler(lines, path, None if uncertainty_path is None else Path(uncertainty_path), looked_for)
    return assembler.build(name, require_uncertainty, allow_missing_ids)
