"""Train a joint sentencepiece model on the training text of both languages, or encode a file with it.

    python sentencepiece_model.py train --model-prefix DIR/spm --vocab-size 40000 FILE [FILE ...]
    python sentencepiece_model.py encode --model DIR/spm.model --out-dir PIECES [--threads N] FILE [FILE ...]

``train`` writes ``DIR/spm.model`` and ``DIR/spm.vocab`` (BPE by default, as the authors' subword-nmt BPE with
40,000 merges; ``--vocab-size`` is an upper bound: a small corpus may give fewer pieces). ``encode`` writes,
for each FILE, ``PIECES/<its name>`` with one line of space-separated pieces per input line (an empty line
stays empty), under a temporary name that is renamed when complete; an output that exists is skipped.
fairseq-generate ``--post-process sentencepiece`` undoes the encoding.
"""
from __future__ import annotations

import argparse
import os
import sys


def train(args) -> None:
    import sentencepiece as spm

    prefix = args.model_prefix
    spm.SentencePieceTrainer.train(
        input=",".join(args.inputs), model_prefix=prefix + ".tmp", vocab_size=args.vocab_size,
        model_type=args.model_type, character_coverage=args.character_coverage,
        input_sentence_size=args.input_sentence_size, shuffle_input_sentence=True, hard_vocab_limit=False,
        num_threads=args.threads, minloglevel=1,
    )
    os.replace(prefix + ".tmp.vocab", prefix + ".vocab")
    os.replace(prefix + ".tmp.model", prefix + ".model")  # last: its existence means the model is complete


def encode(args) -> None:
    import sentencepiece as spm

    model = spm.SentencePieceProcessor(model_file=args.model)
    os.makedirs(args.out_dir, exist_ok=True)
    for path in args.files:
        out = os.path.join(args.out_dir, os.path.basename(path))
        if os.path.exists(out):
            continue
        with open(path, encoding="utf-8", newline="\n") as src, open(out + ".tmp", "w", encoding="utf-8") as handle:
            batch = []
            for line in src:
                batch.append(line.rstrip("\n"))
                if len(batch) == 50000:
                    _write(model, batch, handle, args.threads)
                    batch = []
            _write(model, batch, handle, args.threads)
        os.replace(out + ".tmp", out)
        print(f"sentencepiece: {out}", file=sys.stderr)


def _write(model, lines, out, threads: int) -> None:
    if lines:
        for pieces in model.encode(lines, out_type=str, num_threads=threads):
            out.write(" ".join(pieces) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a joint model")
    p.add_argument("--model-prefix", required=True)
    p.add_argument("--vocab-size", type=int, default=40000)
    p.add_argument("--model-type", default="bpe", choices=["bpe", "unigram"])
    p.add_argument("--character-coverage", type=float, default=1.0)
    p.add_argument("--input-sentence-size", type=int, default=10_000_000, help="sentences sampled for training")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=train)
    p = sub.add_parser("encode", help="encode a text file into pieces")
    p.add_argument("--model", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("files", nargs="+")
    p.set_defaults(func=encode)
    args = parser.parse_args(argv)
    args.func(args)
    print(f"sentencepiece {args.command}: done", file=sys.stderr)


if __name__ == "__main__":
    main()
