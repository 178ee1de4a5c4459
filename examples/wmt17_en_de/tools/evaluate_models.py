"""proxy-end2-evaluate for every model of the recipe, in one process, then the side-by-side summary.

    python evaluate_models.py --generate-dir G --reports-dir R --models "ensemble teacher1 ..." \
        --id-set test --ood-sets "ood_perm ood_de" --manifest sets.tsv --summary WORK/summary [-- EVALUATE_OPTIONS]

For each model and each of its generation folders (``G/MODEL/decode``: beam-search translations, every set
needed; ``G/MODEL/reference``: reference scores, the ID set and the OOD sets that were scored), runs exactly
``proxy-end2-evaluate --id ID=G/MODEL/MODE/generate-ID.txt --ood OOD=... --out R/MODEL/MODE --quiet`` (printed
before it runs; the report is written to a temporary folder and renamed, and an existing report is kept), then
:mod:`summarise` (``SUMMARY.md`` and ``SUMMARY.json``).
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys

import summarise
from proxy_end2.evaluation import cli


def report(generate_dir: str, out: str, id_set: str, ood_sets, extra, every_set: bool) -> None:
    """One proxy-end2-evaluate run from ``generate_dir`` into ``out``; skipped when done, or when a set is missing
    (with ``every_set``; otherwise the OOD sets that are there are used, e.g. those of ``REFERENCE_SETS``)."""
    if os.path.exists(os.path.join(out, "report.json")):
        print(f"evaluate_models: skip {out}: already there", file=sys.stderr)
        return
    files = {s: os.path.join(generate_dir, f"generate-{s}.txt") for s in [id_set, *ood_sets]}
    missing = [s for s, f in files.items() if not os.path.exists(f)]
    if id_set in missing or (every_set and missing):
        print(f"evaluate_models: no report from {generate_dir}: no {', '.join(missing)}", file=sys.stderr)
        return
    ood_sets = [s for s in ood_sets if s not in missing]
    argv = ["--id", f"{id_set}={files[id_set]}"] + [a for s in ood_sets for a in ("--ood", f"{s}={files[s]}")]
    argv += ["--out", out + ".tmp", "--quiet", *extra]
    print(f"evaluate_models: $ proxy-end2-evaluate {shlex.join(argv)}", file=sys.stderr)
    shutil.rmtree(out + ".tmp", ignore_errors=True)
    if cli.main(argv) != 0:
        raise SystemExit(f"proxy-end2-evaluate failed on {generate_dir}")
    os.replace(out + ".tmp", out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generate-dir", required=True)
    p.add_argument("--reports-dir", required=True)
    p.add_argument("--models", required=True, help="space-separated")
    p.add_argument("--id-set", default="test")
    p.add_argument("--ood-sets", required=True, help="space-separated")
    p.add_argument("--manifest", required=True)
    p.add_argument("--summary", required=True, help="SUMMARY.md and SUMMARY.json are written")
    p.add_argument("--nbest", type=int, default=1, help="the summary's N-best size")
    p.add_argument("--weighting", default="uniform", choices=["uniform", "prob"], help="the summary's N-best weights")
    p.add_argument("evaluate_args", nargs=argparse.REMAINDER, help="-- then more proxy-end2-evaluate options")
    args = p.parse_args(argv)
    extra = args.evaluate_args[1:] if args.evaluate_args[:1] == ["--"] else args.evaluate_args
    for model in args.models.split():
        if not os.path.isdir(os.path.join(args.generate_dir, model, "decode")):
            raise SystemExit(f"no generations of {model} in {args.generate_dir}: run generate.sh first")
        for mode in ("decode", "reference"):
            report(os.path.join(args.generate_dir, model, mode), os.path.join(args.reports_dir, model, mode),
                   args.id_set, args.ood_sets.split(), extra, every_set=mode == "decode")
    summarise.main(["--manifest", args.manifest, "--generate-dir", args.generate_dir, "--reports-dir", args.reports_dir,
                    "--models", args.models, "--id-set", args.id_set, "--ood-sets", args.ood_sets,
                    "--nbest", str(args.nbest), "--weighting", args.weighting, "--out", args.summary])


if __name__ == "__main__":
    main()
