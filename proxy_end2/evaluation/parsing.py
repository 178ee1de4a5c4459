"""Read the output of ``fairseq-generate --user-dir proxy_end2`` (stdout or ``generate-<subset>.txt``).

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

Lines of different sample ids are interleaved in batch order; the ``SU-``/``TU-`` lines of a hypothesis may
come before or after its ``H-`` line (they are matched by ``(id, rank)``). Any other line (fairseq's log
lines, ``A-``/``I-``/``E-`` lines, progress output) is ignored.

Pure Python + numpy: no fairseq import.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "GenerateOutputError",
    "UncertaintyHeader",
    "Hypothesis",
    "Sentence",
    "GenerateRun",
    "read_generate_output",
    "NON_MEASURE_COLUMNS",
    "NO_UNCERTAINTY_HINT",
    "NO_REFERENCES_WARNING",
]

#: SU columns that are not uncertainty measures (``log_prob`` is only used for N-best weighting).
NON_MEASURE_COLUMNS = ("length", "log_prob")

NO_UNCERTAINTY_HINT = (
    "run fairseq-generate with --user-dir proxy_end2 --task translation_distillation (the stock CLI then prints "
    "the #SU-columns header and one SU- line per hypothesis; see docs/output-format.md)"
)

NO_REFERENCES_WARNING = "no T- (reference) lines: BLEU/WER and prediction rejection cannot be computed for this set"

_FAIRSEQ_LINE = re.compile(r"^([SHDTPAIEWV])-(\d+)(?:_\d+)?\t")
_GENERATE_LINE = re.compile(r"^Generate (\S+) with beam=(\d+): ?(.*)$")
_TRANSLATED_LINE = re.compile(r"Translated ([\d,]+) sentences")
_BLEU_IN_RESULT = re.compile(r"\bBLEU4? = (-?[\d.]+)")


class GenerateOutputError(ValueError):
    """A fairseq-generate output that cannot be evaluated; the message names the file and line."""

    def __init__(self, path: Union[str, os.PathLike], lineno: Optional[int], message: str):
        self.path = str(path)
        self.lineno = lineno
        self.reason = message
        where = f"{self.path}:{lineno}" if lineno is not None else self.path
        super().__init__(f"{where}: {message}")


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
        return f"kind={self.kind}, members={self.members}, columns={','.join(self.columns)}"


@dataclass
class Hypothesis:
    rank: int  # 0-based N-best rank (order of the H- lines of the sentence)
    text: str  # detokenised hypothesis (D- line if present, else the H- line)
    score: float  # fairseq's score (base 2, as printed)
    tokenized: str = ""  # the H- text (after --remove-bpe/--post-process, before detokenisation)
    length: Optional[int] = None  # L from the SU line (target tokens incl. EOS)
    su: Dict[str, float] = field(default_factory=dict)  # SU column -> value (nats)
    tu: Dict[str, np.ndarray] = field(default_factory=dict)  # token measure -> [L] values


@dataclass
class Sentence:
    id: int
    source: Optional[str]
    reference: Optional[str]
    hypotheses: List[Hypothesis]


@dataclass
class GenerateRun:
    """One parsed fairseq-generate output. ``sentences`` are sorted by id (``sentences[i].id == i`` unless
    ``allow_missing_ids``)."""

    path: str
    name: str
    sentences: List[Sentence]
    header: Optional[UncertaintyHeader]
    subset: Optional[str] = None  # from the final "Generate <subset> with beam=<B>: ..." line
    beam: Optional[int] = None
    fairseq_result: Optional[str] = None  # fairseq's scorer string, e.g. "BLEU4 = 41.23, 70.1/..."
    translated: Optional[int] = None  # from fairseq's "Translated N sentences" log line, when in the file
    warnings: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def num_sentences(self) -> int:
        return len(self.sentences)

    @property
    def has_references(self) -> bool:
        return bool(self.sentences) and all(s.reference is not None for s in self.sentences)

    @property
    def has_uncertainty(self) -> bool:
        return self.header is not None and any(s.hypotheses and s.hypotheses[0].su for s in self.sentences)

    @property
    def max_nbest(self) -> int:
        return max((len(s.hypotheses) for s in self.sentences), default=0)

    @property
    def min_nbest(self) -> int:
        return min((len(s.hypotheses) for s in self.sentences), default=0)

    @property
    def fairseq_bleu(self) -> Optional[float]:
        """The BLEU fairseq printed on its final line (its own tokenisation; for reference only)."""
        m = _BLEU_IN_RESULT.search(self.fairseq_result or "")
        return float(m.group(1)) if m else None

    def references(self) -> List[str]:
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


# ---------------------------------------------------------------------------------------------------------------
# parser


class _Parser:
    def __init__(self, path: Path, load_token_values: bool):
        self.path = path
        self.load_token_values = load_token_values
        self.su_header: Optional[Tuple[str, int, Tuple[str, ...], int]] = None  # kind, members, columns, lineno
        self.tu_header: Optional[Tuple[str, int, Tuple[str, ...], int]] = None
        self.sources: Dict[int, Tuple[str, int]] = {}
        self.references: Dict[int, Tuple[str, int]] = {}
        self.hyps: Dict[int, List[Hypothesis]] = {}
        self.hyp_lines: Dict[int, List[int]] = {}
        self.detok_count: Dict[int, int] = {}
        self.su: Dict[Tuple[int, int], Tuple[int, List[float], int]] = {}  # (id, rank) -> (length, values, lineno)
        self.tu: Dict[Tuple[int, int, str], Tuple[Optional[np.ndarray], int, int]] = {}  # -> (values, count, line)
        self.first_id_line: Dict[int, int] = {}
        self.current_id: Optional[int] = None  # sample whose fairseq block we are in
        self.generate_line: Optional[Tuple[str, int, str, int]] = None
        self.translated: Optional[int] = None
        self.last_content_line = 0

    def error(self, lineno: Optional[int], message: str) -> GenerateOutputError:
        return GenerateOutputError(self.path, lineno, message)

    # -- header ---------------------------------------------------------------------------------------------------
    def parse_header(self, line: str, lineno: int, which: str):
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
        new = (kind, members, names, lineno)
        old = self.su_header if which == "SU" else self.tu_header
        if old is not None:
            if old[:3] != new[:3]:
                raise self.error(
                    lineno,
                    f"second #{which}-columns header differs from the one on line {old[3]} "
                    f"(two runs concatenated into one file?)",
                )
            return
        if which == "SU":
            self.su_header = new
        else:
            self.tu_header = new

    # -- uncertainty lines -------------------------------------------------------------------------------------
    def parse_su(self, line: str, lineno: int):
        if self.su_header is None:
            raise self.error(lineno, "SU- line before any #SU-columns header (the header must come before the "
                                     "first SU- line; is this output cut at the front?)")
        fields = line.split("\t")
        columns = self.su_header[2]
        expected = 3 + len(columns)
        if len(fields) != expected:
            raise self.error(
                lineno,
                f"SU- line has {len(fields) - 3} value columns, the #SU-columns header on line "
                f"{self.su_header[3]} names {len(columns)} ({', '.join(columns)})",
            )
        try:
            sid = int(fields[0][3:])
            rank = int(fields[1])
            length = int(fields[2])
            values = [float(v) for v in fields[3:]]
        except ValueError as exc:
            raise self.error(lineno, f"malformed SU- line ({exc}): {line[:200]!r}") from None
        if rank < 0 or length < 0:
            raise self.error(lineno, f"negative rank or length in SU- line: {line[:200]!r}")
        key = (sid, rank)
        if key in self.su:
            raise self.error(lineno, f"duplicate SU- line for (id={sid}, rank={rank}); first one on line "
                                     f"{self.su[key][2]} (two runs concatenated into one file?)")
        self.su[key] = (length, values, lineno)
        self.last_content_line = lineno

    def parse_tu(self, line: str, lineno: int):
        if self.tu_header is None:
            raise self.error(lineno, "TU- line before any #TU-columns header")
        fields = line.split("\t")
        if len(fields) != 4:
            raise self.error(lineno, f"malformed TU- line (expected TU-<id><TAB><rank><TAB><measure><TAB>"
                                     f"<values>): {line[:200]!r}")
        try:
            sid = int(fields[0][3:])
            rank = int(fields[1])
        except ValueError:
            raise self.error(lineno, f"malformed TU- line: {line[:200]!r}") from None
        measure = fields[2]
        if measure not in self.tu_header[2]:
            raise self.error(lineno, f"TU- measure {measure!r} is not in the #TU-columns header "
                                     f"({', '.join(self.tu_header[2])})")
        key = (sid, rank, measure)
        if key in self.tu:
            raise self.error(lineno, f"duplicate TU- line for (id={sid}, rank={rank}, {measure}); first one on "
                                     f"line {self.tu[key][2]}")
        tokens = fields[3].split()
        values = None
        if self.load_token_values:
            try:
                values = np.array(tokens, dtype=np.float64)
            except ValueError:
                raise self.error(lineno, f"non-numeric value in TU- line: {line[:200]!r}") from None
        self.tu[key] = (values, len(tokens), lineno)
        self.last_content_line = lineno

    # -- fairseq lines -----------------------------------------------------------------------------------------
    def parse_fairseq(self, tag: str, sid: int, line: str, lineno: int):
        self.first_id_line.setdefault(sid, lineno)
        if tag in "ST":
            store = self.sources if tag == "S" else self.references
            if sid in store:
                raise self.error(lineno, f"second {tag}-{sid} line (first on line {store[sid][1]}): duplicate "
                                         f"sample id (two runs concatenated into one file?)")
            store[sid] = (line.split("\t", 1)[1], lineno)
        elif tag == "H":
            if sid in self.hyps and self.current_id != sid:
                raise self.error(
                    lineno,
                    f"H-{sid} line after the hypotheses of other sentences, although sample {sid} already has "
                    f"{len(self.hyps[sid])} (first on line {self.hyp_lines[sid][0]}): duplicate (id, rank) "
                    f"(two runs concatenated into one file?)",
                )
            fields = line.split("\t", 2)
            try:
                score = float(fields[1]) if len(fields) > 1 else math.nan
            except ValueError:
                raise self.error(lineno, f"malformed H- line (score is not a number): {line[:200]!r}") from None
            text = fields[2] if len(fields) > 2 else ""
            lst = self.hyps.setdefault(sid, [])
            lst.append(Hypothesis(rank=len(lst), text=text, score=score, tokenized=text))
            self.hyp_lines.setdefault(sid, []).append(lineno)
        elif tag == "D":
            hyps = self.hyps.get(sid, [])
            rank = self.detok_count.get(sid, 0)
            if rank >= len(hyps):
                raise self.error(lineno, f"D-{sid} line without a preceding H-{sid} line of the same rank")
            fields = line.split("\t", 2)
            hyps[rank].text = fields[2] if len(fields) > 2 else ""
            self.detok_count[sid] = rank + 1
        self.current_id = sid
        self.last_content_line = lineno

    # -- driver ------------------------------------------------------------------------------------------------
    def run(self, name: Optional[str], require_uncertainty: bool, allow_missing_ids: bool,
            expected_sentences: Optional[int]) -> GenerateRun:
        path = self.path
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.is_dir():
            raise GenerateOutputError(path, None, "is a directory, expected a fairseq-generate output file")
        with open(path, "r", encoding="utf-8", errors="replace", newline="\n") as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.rstrip("\n").rstrip("\r")
                if not line:
                    continue
                c0 = line[0]
                if c0 == "#":
                    if line.startswith("#SU-columns"):
                        self.parse_header(line, lineno, "SU")
                    elif line.startswith("#TU-columns"):
                        self.parse_header(line, lineno, "TU")
                    continue
                if line.startswith("SU-"):
                    self.parse_su(line, lineno)
                    continue
                if line.startswith("TU-"):
                    self.parse_tu(line, lineno)
                    continue
                m = _FAIRSEQ_LINE.match(line)
                if m is not None:
                    self.parse_fairseq(m.group(1), int(m.group(2)), line, lineno)
                    continue
                m = _GENERATE_LINE.match(line)
                if m is not None:
                    self.generate_line = (m.group(1), int(m.group(2)), m.group(3), lineno)
                    continue
                m = _TRANSLATED_LINE.search(line)
                if m is not None:
                    self.translated = int(m.group(1).replace(",", ""))
        return self.finish(name, require_uncertainty, allow_missing_ids, expected_sentences)

    def finish(self, name: Optional[str], require_uncertainty: bool, allow_missing_ids: bool,
               expected_sentences: Optional[int]) -> GenerateRun:
        path = self.path
        warnings: List[str] = []
        if not self.hyps:
            if self.sources or self.references:
                raise self.error(None, "S-/T- lines but no H- (hypothesis) line: was fairseq-generate run with "
                                       "--quiet, or is the file cut short?")
            raise self.error(None, "no H- (hypothesis) line: not a fairseq-generate output, or empty")

        # every id with S-/T- lines has hypotheses
        for sid in sorted(set(self.sources) | set(self.references)):
            if sid not in self.hyps:
                raise self.error(self.first_id_line[sid], f"sample {sid} has S-/T- lines but no H- line "
                                                          f"(file cut short?)")
        # references: all or none
        if self.references and len(self.references) != len(self.hyps):
            missing = sorted(set(self.hyps) - set(self.references))
            raise self.error(self.first_id_line[missing[0]],
                             f"{len(missing)} sentence(s) have no T- (reference) line although others do: "
                             f"ids {_short_list(missing)}")

        # completeness: ids 0..N-1, final "Generate ... with beam=" line
        ids = sorted(self.hyps)
        n_expected = ids[-1] + 1
        if self.translated is not None:
            n_expected = max(n_expected, self.translated)
        if expected_sentences is not None:
            if ids[-1] >= expected_sentences:
                raise self.error(None, f"sample id {ids[-1]} found, but the set has {expected_sentences} "
                                       f"sentences (ids 0..{expected_sentences - 1}): wrong file?")
            n_expected = max(n_expected, expected_sentences)
        missing = sorted(set(range(n_expected)) - set(ids))
        if missing:
            msg = (f"{len(missing)} of {n_expected} sample ids are missing: {_short_list(missing)}. Sample ids "
                   f"must be 0..N-1; fairseq-fixed silently drops the last sentences of a split unless "
                   f"fairseq-generate gets --required-batch-size-multiple 1 (also check "
                   f"--skip-invalid-size-inputs-valid-test and --max-len-a/--max-source-positions filtering), "
                   f"or the file is cut short")
            if not allow_missing_ids:
                raise self.error(None, msg)
            warnings.append(msg)
        if self.references and self.generate_line is None:
            raise self.error(
                self.last_content_line,
                "no final 'Generate <subset> with beam=<B>: ...' line although the file has T- lines: the output "
                "looks truncated (fairseq-generate interrupted, or still running?)",
            )
        if not self.references and self.generate_line is None and self.translated is None:
            warnings.append("no T- (reference) lines, so fairseq printed no final 'Generate ... with beam=' line "
                            "and completeness cannot be checked beyond the contiguity of the sample ids")
        if self.translated is not None and self.translated != len(ids):
            msg = (f"fairseq's log says it translated {self.translated} sentences, the file has hypotheses for "
                   f"{len(ids)}")
            if not allow_missing_ids:
                raise self.error(None, msg + (" (file cut short?)" if self.translated > len(ids) else
                                              " (outputs of several runs in one file?)"))
            warnings.append(msg)

        # uncertainty lines <-> hypotheses
        header = None
        if self.su_header is None:
            if require_uncertainty:
                raise self.error(None, f"no #SU-columns header and no SU- line: {NO_UNCERTAINTY_HINT}")
        else:
            kind, members, columns, _ = self.su_header
            token_measures = self.tu_header[2] if self.tu_header is not None else ()
            if self.tu_header is not None and self.tu_header[:2] != self.su_header[:2]:
                raise self.error(self.tu_header[3], "#TU-columns header has another kind/members than the "
                                                    "#SU-columns header")
            header = UncertaintyHeader(kind=kind, members=members, columns=columns, token_measures=token_measures)
            for sid in ids:
                for hyp, hline in zip(self.hyps[sid], self.hyp_lines[sid]):
                    entry = self.su.pop((sid, hyp.rank), None)
                    if entry is None:
                        raise self.error(hline, f"hypothesis (id={sid}, rank={hyp.rank}) has no SU- line "
                                                f"(file cut short, or generated without --user-dir proxy_end2?)")
                    length, values, _ = entry
                    hyp.length = length
                    hyp.su = dict(zip(columns, values))
            if self.su:
                (sid, rank), (_, _, sline) = min(self.su.items(), key=lambda kv: kv[1][2])
                n_h = len(self.hyps.get(sid, []))
                raise self.error(sline, f"SU- line for (id={sid}, rank={rank}) without a matching hypothesis "
                                        f"(sample {sid} has {n_h} H- line(s))")
            for (sid, rank, measure), (values, count, tline) in sorted(self.tu.items(), key=lambda kv: kv[1][2]):
                hyps = self.hyps.get(sid, [])
                if rank >= len(hyps):
                    raise self.error(tline, f"TU- line for (id={sid}, rank={rank}) without a matching hypothesis")
                hyp = hyps[rank]
                if hyp.length is not None and count != hyp.length:
                    raise self.error(tline, f"TU- line for (id={sid}, rank={rank}, {measure}) has {count} values, "
                                            f"its SU- line says length {hyp.length}")
                if values is not None:
                    hyp.tu[measure] = values
        if self.su_header is None and self.su:
            raise AssertionError("unreachable: SU lines without header are rejected while reading")

        sentences = [
            Sentence(
                id=sid,
                source=self.sources[sid][0] if sid in self.sources else None,
                reference=self.references[sid][0] if sid in self.references else None,
                hypotheses=self.hyps[sid],
            )
            for sid in ids
        ]
        subset = beam = result = None
        if self.generate_line is not None:
            subset, beam, result, _ = self.generate_line
        if not self.references:
            warnings.append(NO_REFERENCES_WARNING)
        return GenerateRun(
            path=str(path),
            name=name if name is not None else _default_name(path),
            sentences=sentences,
            header=header,
            subset=subset,
            beam=beam,
            fairseq_result=result,
            translated=self.translated,
            warnings=warnings,
        )


def _short_list(values: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def _default_name(path: Path) -> str:
    stem = path.name
    for suffix in (".txt", ".out", ".log"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    if stem.startswith("generate-") and len(stem) > len("generate-"):
        stem = stem[len("generate-"):]
    return stem or path.name


def read_generate_output(
    path: Union[str, os.PathLike],
    name: Optional[str] = None,
    *,
    require_uncertainty: bool = True,
    allow_missing_ids: bool = False,
    load_token_values: bool = True,
    expected_sentences: Optional[int] = None,
) -> GenerateRun:
    """Parse one fairseq-generate output file.

    Args:
        path: the file (fairseq-generate's stdout, or ``<results-path>/generate-<subset>.txt``).
        name: the set's name (default: the file name without ``generate-`` and ``.txt``).
        require_uncertainty: raise if the file has no ``#SU-columns`` header / ``SU-`` lines (a plain
            fairseq-generate output); with False such a file parses with ``header=None``.
        allow_missing_ids: turn "sample ids not contiguous 0..N-1" into a warning (e.g. on purpose filtered
            sentences) instead of an error.
        load_token_values: parse the numbers of the ``TU-`` lines into ``Hypothesis.tu`` (False: only check
            them, which is faster when only sequence-level measures are needed).
        expected_sentences: the size of the split, if known: sentences dropped at the end of the split
            (ids N-k..N-1) are otherwise undetectable when fairseq's log line "Translated N sentences" is not
            in the file.

    Raises:
        FileNotFoundError: the file does not exist.
        GenerateOutputError (a ValueError): a malformed, inconsistent or truncated file; the message names the
            file and, where it applies, the line number.
    """
    return _Parser(Path(path), load_token_values).run(name, require_uncertainty, allow_missing_ids,
                                                      expected_sentences)
