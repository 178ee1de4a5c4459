"""Moses-style punctuation normalisation of text files, line by line (sacremoses), for the model's input.

    python normalise.py --lang en --out-dir NORM [--workers N] FILE [FILE ...]

Per line: unicode punctuation replaced by ASCII where Moses does (``replace-unicode-punctuation.perl``),
punctuation normalised (``normalize-punctuation.perl``), control characters removed
(``remove-non-printing-char.perl``), whitespace collapsed. Each FILE goes to ``NORM/<its name>``; the line
count is kept (an empty line stays empty); outputs are written under a temporary name and renamed when
complete, and an output that exists already is skipped. Files of more than 100,000 lines are split over
``--workers`` processes.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from multiprocessing import Pool

_NORMALIZER = None
PARALLEL_LINES = 100_000


def _init(lang: str) -> None:
    global _NORMALIZER
    from sacremoses import MosesPunctNormalizer

    _NORMALIZER = MosesPunctNormalizer(lang=lang, pre_replace_unicode_punct=True, post_remove_control_chars=True)


def normalise_lines(lines):
    """The normalised lines (no newline) of ``lines`` (with or without)."""
    return [re.sub(r"\s+", " ", _NORMALIZER.normalize(line.rstrip("\n"))).strip() for line in lines]


def _batches(lines, size: int = 20000):
    return [lines[i:i + size] for i in range(0, len(lines), size)]


def normalise_file(path: str, out: str, lang: str, workers: int) -> None:
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        lines = f.readlines()
    with open(out + ".tmp", "w", encoding="utf-8") as handle:
        if workers > 1 and len(lines) > PARALLEL_LINES:
            with Pool(workers, initializer=_init, initargs=(lang,)) as pool:
                for batch in pool.imap(normalise_lines, _batches(lines)):
                    handle.writelines(line + "\n" for line in batch)
        else:
            handle.writelines(line + "\n" for line in normalise_lines(lines))
    os.replace(out + ".tmp", out)
    print(f"normalise: {out} ({len(lines)} lines)", file=sys.stderr)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", required=True, help="language code (Moses' rules differ for en, de, fr, ...)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    _init(args.lang)
    for path in args.files:
        out = os.path.join(args.out_dir, os.path.basename(path))
        if not os.path.exists(out):
            normalise_file(path, out, args.lang, args.workers)


if __name__ == "__main__":
    main()
