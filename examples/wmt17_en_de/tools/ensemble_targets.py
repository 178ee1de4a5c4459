"""The students' training targets from the ensemble's beam-search translations of the training source.

    python ensemble_targets.py --shards DIR/shard0/generate-train.txt,... --references train.clean.de \
        --output targets.de

Reads the top hypothesis (its ``H-`` line: sentencepiece pieces, as fairseq-generate printed them without
``--post-process``) of every sentence from the fairseq-generate outputs of all shards, and writes them in
corpus order, one per line (under a temporary name, renamed when complete). A sentence whose translation is
empty keeps its reference (counted and reported); a sentence that no shard translated is an error (a shard
missing or cut short), raised before anything is written.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

from proxy_end2.evaluation.parsing import read_generate_output


def top_hypotheses(paths: List[str]) -> Dict[int, str]:
    """sentence id -> text of its first ``H-`` line, over the fairseq-generate outputs ``paths`` (shards)."""
    out: Dict[int, str] = {}
    for path in paths:
        run = read_generate_output(path, require_uncertainty=False, allow_missing_ids=True, load_token_values=False)
        for sentence in run.sentences:
            if sentence.hypotheses:
                out.setdefault(sentence.id, sentence.hypotheses[0].tokenized.strip())
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True, help="comma-separated fairseq-generate outputs")
    parser.add_argument("--references", required=True, help="the (encoded) training targets, for the line count "
                                                            "and for empty translations")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    hypotheses = top_hypotheses(args.shards.split(","))
    with open(args.references, encoding="utf-8") as f:
        references = [line.rstrip("\n") for line in f]
    missing = [i for i in range(len(references)) if i not in hypotheses]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(references)} training sentences have no ensemble translation "
                         f"(first ids: {missing[:5]}): delete the incomplete shard outputs and run distill.sh again")
    empty = 0
    with open(args.output + ".tmp", "w", encoding="utf-8") as out:
        for i, reference in enumerate(references):
            empty += not hypotheses[i]
            out.write((hypotheses[i] or reference) + "\n")
    os.replace(args.output + ".tmp", args.output)
    print(f"ensemble_targets: {len(references)} targets, {empty} empty translation(s) kept their reference",
          file=sys.stderr)


if __name__ == "__main__":
    main()
