"""fairseq-generate for several models and subsets in one process: stock ``fairseq_cli.generate.main`` once per
(model, subset), and once more with ``--score-reference`` for the models of ``--reference-models`` on the
subsets of ``--reference-sets``, so that Python, torch and fairseq are loaded once, not once per run.

    python generate_sets.py --out DIR --model ensemble=a.pt:b.pt --model student=s.pt \
        --sets test,ood_perm --reference-models ensemble,student --reference-sets test -- \
        DATA --user-dir proxy_end2 --task translation_distillation --beam 5 --nbest 5 ...

Every run is exactly ``fairseq-generate ARGS --path PATHS --gen-subset SUBSET --results-path DIR/MODEL/decode``
(``DIR/MODEL/reference`` with ``--score-reference``), printed before it runs. It writes ``generate-SUBSET.txt`` and
the uncertainty lines ``uncertainty-SUBSET.txt`` into a temporary folder, both moved into place when complete
(``generate-SUBSET.txt`` last): a run whose ``generate-SUBSET.txt`` exists is skipped, and an interrupted run
leaves nothing that looks complete. fairseq's progress bar goes to standard error.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import time
from typing import List

from fairseq import options
from fairseq_cli import generate


def run_once(fairseq_args: List[str], out_dir: str, subset: str) -> None:
    """One stock fairseq-generate run (``fairseq_args`` + ``--gen-subset subset``) into ``out_dir``."""
    final = os.path.join(out_dir, f"generate-{subset}.txt")
    if os.path.exists(final):
        print(f"generate_sets: skip {final}: already there", file=sys.stderr)
        return
    argv = [*fairseq_args, "--gen-subset", subset]
    tmp = os.path.join(out_dir, f".tmp-{subset}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"generate_sets: $ fairseq-generate {shlex.join(argv)} --results-path {out_dir}", file=sys.stderr)
    for handler in list(logging.root.handlers):  # fairseq's main sends its log to each results file anew
        logging.root.removeHandler(handler)
    start = time.time()
    generate.main(options.parse_args_and_arch(options.get_generation_parser(), [*argv, "--results-path", tmp]))
    for name in (f"uncertainty-{subset}.txt", f"generate-{subset}.txt"):  # the generate file last: it marks done
        if os.path.exists(os.path.join(tmp, name)):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"generate_sets: {final} ({time.time() - start:.0f} s)", file=sys.stderr)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="results folder: OUT/MODEL/decode and OUT/MODEL/reference")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATHS",
                        help="a model (or ensemble: colon-separated checkpoints); repeat for several")
    parser.add_argument("--sets", required=True, help="comma-separated subsets to translate")
    parser.add_argument("--reference-models", default="", help="comma-separated NAMEs that also score references")
    parser.add_argument("--reference-sets", default="", help="comma-separated subsets to score the reference of")
    parser.add_argument("fairseq_args", nargs=argparse.REMAINDER, help="-- then fairseq-generate's arguments")
    args = parser.parse_args(argv)
    fairseq_args = args.fairseq_args[1:] if args.fairseq_args[:1] == ["--"] else args.fairseq_args
    for flag in ("--path", "--gen-subset", "--results-path", "--score-reference"):
        if flag in fairseq_args:
            raise SystemExit(f"generate_sets: do not pass {flag}: it is set per run")
    models = [spec.split("=", 1) for spec in args.model]
    reference_models = set(filter(None, args.reference_models.split(",")))
    for name, paths in models:
        model_args = [*fairseq_args, "--path", paths]
        runs = [("decode", model_args, args.sets)]
        if name in reference_models:
            runs.append(("reference", [*model_args, "--score-reference"], args.reference_sets))
        for mode, run_args, subsets in runs:
            out_dir = os.path.join(args.out, name, mode)
            os.makedirs(out_dir, exist_ok=True)
            for subset in filter(None, subsets.split(",")):
                run_once(run_args, out_dir, subset)


if __name__ == "__main__":
    main()
