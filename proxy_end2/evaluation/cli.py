"""``proxy-end2-evaluate``: turn fairseq-generate outputs (with ``proxy_end2`` uncertainty lines) of an in-domain
test set and out-of-domain sets into a report (``report.json``, ``report.md``, ``plots/*.png``)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence, Tuple

from .report import QUALITY_CHOICES, WEIGHTINGS, evaluate, render_markdown

PROG = "proxy-end2-evaluate"

EPILOG = """\
Inputs: the output of `fairseq-generate DATA --user-dir proxy_end2 --task translation_distillation --path CKPT
--gen-subset SUBSET --required-batch-size-multiple 1 [--nbest 5]` (stdout, or <results-path>/generate-SUBSET.txt),
one file per set, all from the same model and options (docs/output-format.md).

Output DIR/report.json:
  settings        id_set, ood_sets, quality, nbest [n...], weightings, definitions
  model           kind, members, columns (SU columns), measures (columns except length, log_prob)
  sets[NAME]      role (id|ood), path, num_sentences, max_nbest, min_nbest, has_references,
                  quality {bleu, wer, mean_sentence_error} (%, top-1; null without T- lines),
                  fairseq_result / fairseq_bleu (fairseq's own final line), measure_means (n=1),
                  pr_auc_chance (OOD sets)
  ood_detection[OOD][n][weighting][measure] = {roc_auc, pr_auc}   (%, OOD = positive class)
  prr[SET][n][weighting][measure] = PRR (%; sets with references; 100 = oracle, 0 = random)
  notes, warnings, plots (paths relative to DIR)
n is a string key ("1", "5"); for n = 1 all weightings give the same numbers.
"""


def _split_spec(spec: str, flag: str) -> Tuple[Optional[str], str]:
    """``NAME=FILE`` -> (NAME, FILE); a bare ``FILE`` (or an existing file whose name has '=') -> (None, FILE)."""
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
        if not name or not path:
            raise ValueError(f"{flag} {spec!r}: expected NAME=FILE")
        return name, path
    return None, spec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate uncertainty (OOD detection, prediction rejection) and quality (BLEU/WER) from "
                    "fairseq-generate outputs printed with --user-dir proxy_end2.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--id", required=True, metavar="NAME=FILE", help="in-domain set (e.g. test=generate-test.txt)")
    p.add_argument("--ood", action="append", default=[], metavar="NAME=FILE",
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
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNGs")
    p.add_argument("--allow-missing-ids", action="store_true",
                   help="accept sample ids that are not contiguous 0..N-1 (e.g. sentences filtered on purpose)")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown summary")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        id_name, id_path = _split_spec(args.id, "--id")
        oods: List[Tuple[Optional[str], str]] = [_split_spec(s, "--ood") for s in args.ood]
        for flag, (_, path) in [("--id", (id_name, id_path))] + [("--ood", o) for o in oods]:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{flag} {path}: no such file")
        from .parsing import read_generate_output

        def read(name: Optional[str], path: str):
            return read_generate_output(path, name, allow_missing_ids=args.allow_missing_ids,
                                        load_token_values=False)

        id_run = read(id_name, id_path)
        ood_runs = [read(name, path) for name, path in oods]
        report = evaluate(
            id_run,
            ood_runs,
            quality=args.quality,
            nbest=args.nbest,
            weightings=args.weighting,
            out_dir=args.out,
            plots=not args.no_plots,
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
