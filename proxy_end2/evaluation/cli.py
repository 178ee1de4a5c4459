"""``proxy-end2-evaluate``: turn fairseq-generate outputs (with ``proxy_end2`` uncertainty lines) of an in-domain
test set and out-of-domain sets into a report (``report.json``, ``report.md``, ``plots/*.png``)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import NamedTuple, Optional, Sequence

from .markdown import render_markdown
from .parsing import read_generate_output
from .records import GenerateRun
from .report import QUALITY_CHOICES, WEIGHTINGS, evaluate
from .token_errors import TOKEN_UNITS

PROG = "proxy-end2-evaluate"

EPILOG = """\
Inputs: the output of `fairseq-generate DATA --user-dir proxy_end2 --task translation_distillation --path CKPT
--gen-subset SUBSET --required-batch-size-multiple 1 [--nbest 5]`, one set each, all from the same model and
options (docs/output-format.md). Give a set as
  NAME=FILE                   fairseq-generate's stdout (every line in FILE), or DIR/generate-SUBSET.txt of
                              --results-path DIR: the uncertainty lines are then read from
                              DIR/uncertainty-SUBSET.txt next to it
  NAME=FILE,UNCERTAINTY_FILE  the uncertainty lines in UNCERTAINTY_FILE (--uncertainty-output UNCERTAINTY_FILE)
NAME= may be left out: the set is then named after FILE (generate-test.txt -> test).

Output DIR/report.json:
  settings        id_set, ood_sets, quality, nbest [n...], weightings, definitions
  model           kind, members, columns (SU columns), measures (columns except length, log_prob)
  sets[NAME]      role (id|ood), path, uncertainty_path (null: in path), num_sentences, max_nbest, min_nbest,
                  has_references,
                  quality {bleu, wer, mean_sentence_error} (%, top-1; null without T- lines),
                  fairseq_result / fairseq_bleu (fairseq's own final line), measure_means (n=1),
                  pr_auc_chance (OOD sets)
  ood_detection[OOD][n][weighting][measure] = {roc_auc, pr_auc}   (%, OOD = positive class)
  prr[SET][n][weighting][measure] = PRR (%; sets with references; 100 = oracle, 0 = random)
  token_errors[SET] (--token-errors) = {unit, tokens, errors, error_rate, measures[measure] = {roc_auc, pr_auc}}
                  (%; wrong top-1 tokens = positive class; needs T- lines, TU- lines, and H- lines in the model's
                  units: fairseq-generate without --post-process/--remove-bpe)
  notes, warnings, plots (paths relative to DIR)
n is a string key ("1", "5"); for n = 1 all weightings give the same numbers.
"""


class SetSpec(NamedTuple):
    """One ``--id``/``--ood`` argument: ``[NAME=]FILE[,UNCERTAINTY_FILE]``."""

    name: Optional[str]  # None: named after the file
    path: str  # the generate output
    uncertainty_path: Optional[str]  # None: in FILE, or next to it (uncertainty-SUBSET.txt)


def parse_set_spec(spec: str, flag: str) -> SetSpec:
    """``NAME=FILE[,UNCERTAINTY_FILE]`` or ``FILE[,UNCERTAINTY_FILE]``; an existing file whose name has '=' or ','
    is taken as it is. Raises ValueError for an empty part."""
    name, path = None, spec
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
    uncertainty_path = None
    if "," in path and not os.path.exists(path):
        path, uncertainty_path = path.split(",", 1)
    if name == "" or not path or uncertainty_path == "":
        raise ValueError(f"{flag} {spec!r}: expected NAME=FILE or NAME=FILE,UNCERTAINTY_FILE")
    for file in (path, uncertainty_path):
        if file is not None and not os.path.isfile(file):
            raise FileNotFoundError(f"{flag} {file}: no such file")
    return SetSpec(name, path, uncertainty_path)


def read_set(spec: SetSpec, allow_missing_ids: bool, load_token_values: bool = False) -> GenerateRun:
    """The set of one ``--id``/``--ood`` argument (token-level values only if asked for)."""
    return read_generate_output(spec.path, spec.name, uncertainty_path=spec.uncertainty_path,
                                allow_missing_ids=allow_missing_ids, load_token_values=load_token_values)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``proxy-end2-evaluate`` (see ``--help``)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate uncertainty (OOD detection, prediction rejection) and quality (BLEU/WER) from "
                    "fairseq-generate outputs printed with --user-dir proxy_end2.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--id", required=True, metavar="NAME=FILE[,UNCERTAINTY_FILE]",
                   help="in-domain set (e.g. test=results/generate-test.txt; results/uncertainty-test.txt is "
                        "read too if it exists; see below)")
    p.add_argument("--ood", action="append", default=[], metavar="NAME=FILE[,UNCERTAINTY_FILE]",
                   help="out-of-domain set; repeat for several")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--quality", choices=QUALITY_CHOICES, default="bleu",
                   help="per-sentence error for prediction rejection: 100 - sentence BLEU (MT) or sentence WER "
                        "(ASR) (default: bleu); corpus BLEU and WER are reported either way")
    p.add_argument("--nbest", type=int, nargs="+", metavar="N",
                   help="N-best sizes to aggregate the measures over (default: 1 and the largest N-best every set "
                        "has)")
    p.add_argument("--weighting", choices=WEIGHTINGS, nargs="+", default=list(WEIGHTINGS),
                   help="N-best weighting(s): uniform mean, or prob = softmax of the log_prob column "
                        "(default: both)")
    p.add_argument("--token-errors", action="store_true",
                   help="also report token-level error detection (ROC-AUC, PR-AUC of every TU- measure for finding "
                        "the wrong tokens of the top-1 hypotheses; speech recognition, as the authors did)")
    p.add_argument("--token-error-unit", choices=TOKEN_UNITS, default="word",
                   help="label a hypothesis piece wrong when its word is not matched in the word alignment to the "
                        "reference (word, default), or when the piece is not matched in the piece alignment "
                        "(piece: needs --sentencepiece-model)")
    p.add_argument("--sentencepiece-model", metavar="SPM_MODEL",
                   help="the sentencepiece model that cut the hypotheses (for --token-error-unit piece)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNGs")
    p.add_argument("--allow-missing-ids", action="store_true",
                   help="accept sample ids that are not contiguous 0..N-1 (e.g. sentences filtered on purpose)")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown summary")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``proxy-end2-evaluate``: read the sets, write the report; print its Markdown unless ``--quiet``.
    Returns the exit status: 0, or 1 after printing an error about unusable inputs to stderr."""
    args = build_parser().parse_args(argv)
    try:
        id_spec = parse_set_spec(args.id, "--id")
        ood_specs = [parse_set_spec(s, "--ood") for s in args.ood]
        id_run = read_set(id_spec, args.allow_missing_ids, args.token_errors)
        ood_runs = [read_set(spec, args.allow_missing_ids, args.token_errors) for spec in ood_specs]
        report = evaluate(
            id_run,
            ood_runs,
            quality=args.quality,
            nbest=args.nbest,
            weightings=args.weighting,
            out_dir=args.out,
            plots=not args.no_plots,
            token_errors=args.token_errors,
            token_unit=args.token_error_unit,
            sentencepiece_model=args.sentencepiece_model,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(render_markdown(report))
    print(f"{PROG}: wrote {os.path.join(args.out, 'report.json')}, {os.path.join(args.out, 'report.md')}"
          + (f" and {len(report['plots'])} plot(s) in {os.path.join(args.out, 'plots')}" if report["plots"] else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
