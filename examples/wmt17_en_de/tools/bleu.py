"""Corpus BLEU of fairseq-generate outputs against raw reference files (sacrebleu, detokenised text).

    python bleu.py GENERATE_FILE RAW_REFERENCE OUT.json [GENERATE_FILE RAW_REFERENCE OUT.json ...]

The hypotheses are the top ``D-`` lines (``--post-process sentencepiece``: the pieces joined back into text),
put in corpus order by sample id; the references are the lines of the raw (unnormalised, untokenised)
reference file, not fairseq's ``T-`` lines. For each triple, writes ``{"bleu", "signature", "sentences",
"generate", "reference"}`` to OUT.json (under a temporary name, renamed; an existing OUT.json is kept) and
prints the score.
"""
from __future__ import annotations

import json
import os
import sys

from proxy_end2.evaluation.parsing import read_generate_output
from proxy_end2.evaluation.quality import corpus_bleu, corpus_bleu_signature


def score(generate_file: str, reference_file: str) -> dict:
    run = read_generate_output(generate_file, require_uncertainty=False, load_token_values=False)
    with open(reference_file, encoding="utf-8") as f:
        references = [line.rstrip("\n") for line in f]
    if len(run.sentences) != len(references):
        raise SystemExit(f"{generate_file} has {len(run.sentences)} sentences, {reference_file} {len(references)}")
    hypotheses = [s.hypotheses[0].text if s.hypotheses else "" for s in sorted(run.sentences, key=lambda s: s.id)]
    return {"bleu": corpus_bleu(hypotheses, references), "signature": corpus_bleu_signature(),
            "sentences": len(references), "generate": os.path.abspath(generate_file),
            "reference": os.path.abspath(reference_file)}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) % 3:
        raise SystemExit(__doc__)
    for generate_file, reference_file, out in zip(argv[0::3], argv[1::3], argv[2::3]):
        if os.path.exists(out):
            continue
        result = score(generate_file, reference_file)
        with open(out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        os.replace(out + ".tmp", out)
        print(f"BLEU = {result['bleu']:.2f} ({result['signature']}) {generate_file}")


if __name__ == "__main__":
    main()
