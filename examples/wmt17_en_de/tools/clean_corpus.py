"""Drop training pairs by length, like Moses' ``clean-corpus-n.perl -ratio R CORPUS SRC TGT OUT MIN MAX``.

    python clean_corpus.py --ratio 1.5 --min 1 --max 250 IN_PREFIX OUT_PREFIX SRC TGT

Reads ``IN_PREFIX.SRC`` / ``IN_PREFIX.TGT`` (one sentence per line, space-separated units: the authors and this
recipe clean after subword encoding, so the units are subwords) and keeps a pair when both sides have between
MIN and MAX units and neither is more than RATIO times longer than the other. Writes ``OUT_PREFIX.SRC`` /
``OUT_PREFIX.TGT`` (temporary names, renamed when complete) and prints how many pairs were kept.
"""
from __future__ import annotations

import argparse
import os
import sys


def keep(src_len: int, tgt_len: int, ratio: float, low: int, high: int) -> bool:
    """clean-corpus-n's rule for one pair of lengths (in units)."""
    if not (low <= src_len <= high and low <= tgt_len <= high):
        return False
    return src_len <= ratio * tgt_len and tgt_len <= ratio * src_len


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratio", type=float, default=1.5)
    parser.add_argument("--min", type=int, default=1)
    parser.add_argument("--max", type=int, default=250)
    parser.add_argument("in_prefix")
    parser.add_argument("out_prefix")
    parser.add_argument("src")
    parser.add_argument("tgt")
    args = parser.parse_args(argv)
    outs = [f"{args.out_prefix}.{lang}" for lang in (args.src, args.tgt)]
    total = kept = 0
    with open(f"{args.in_prefix}.{args.src}", encoding="utf-8") as fs, \
            open(f"{args.in_prefix}.{args.tgt}", encoding="utf-8") as ft, \
            open(outs[0] + ".tmp", "w", encoding="utf-8") as os_, open(outs[1] + ".tmp", "w", encoding="utf-8") as ot:
        try:
            for s, t in zip(fs, ft, strict=True):
                total += 1
                if keep(len(s.split()), len(t.split()), args.ratio, args.min, args.max):
                    os_.write(s)
                    ot.write(t)
                    kept += 1
        except ValueError:
            raise SystemExit(f"{args.in_prefix}.{args.src} and .{args.tgt} differ in length (after line {total})")
    for out in outs:
        os.replace(out + ".tmp", out)
    print(f"clean_corpus: kept {kept} of {total} sentence pairs", file=sys.stderr)


if __name__ == "__main__":
    main()
