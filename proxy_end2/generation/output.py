"""The ``SU-`` / ``TU-`` lines that fairseq-generate prints for every hypothesis (``docs/output-format.md``).

The reader is :mod:`proxy_end2.evaluation.parsing`; a round-trip test keeps the two in step.
"""
import inspect
import os
import sys
from typing import List, Optional, Sequence, TextIO

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


def format_hypothesis(sample_id: int, rank: int, uncertainty: dict, sequence_names: Sequence[str],
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


def fairseq_generate_stream() -> Optional[TextIO]:
    """The stream fairseq-generate is writing its S-/H- lines to, if we are called from inside it.

    ``fairseq_cli.generate._main(cfg, output_file)`` writes to stdout or to
    ``<results-path>/generate-<subset>.txt``; the plugin cannot be handed that file object, so we take it
    from the caller's frame. Returns None when not running under fairseq-generate.
    """
    frame = inspect.currentframe()
    while frame is not None:
        # match by file, not module name: `python -m fairseq_cli.generate` runs it as __main__
        code = frame.f_code
        if code.co_name == "_main" and code.co_filename.endswith(os.path.join("fairseq_cli", "generate.py")):
            return frame.f_locals.get("output_file")
        frame = frame.f_back
    return None


def default_stream() -> TextIO:
    return fairseq_generate_stream() or sys.stdout
