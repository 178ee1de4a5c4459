"""Out-of-domain source sets of the recipe (the paper's, where public).

    python ood_sets.py permute --seed 1 IN OUT        # every line's words in a random order (seeded)
    python ood_sets.py librispeech SOURCE OUT        # LibriSpeech transcripts as English sentences

``librispeech`` reads the ``*.trans.txt`` files of LibriSpeech (``SOURCE`` = the ``test-clean.tar.gz`` archive
from openslr.org, read in place, or a folder that contains them, or one transcript file of ``ID TEXT`` lines),
in sorted file order, drops the utterance ids and writes the text as the authors did: lower case, first
letter capitalised, a full stop appended. Outputs are written under a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tarfile
from pathlib import Path
from typing import Iterable, List


def permuted(lines: Iterable[str], seed: int) -> List[str]:
    """Each line's whitespace-separated words shuffled (one generator for the file: the result depends only on
    the text and the seed)."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = line.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def transcript_sentence(line: str) -> str:
    """``"1089-134686-0000 HE HOPED THERE"`` -> ``"He hoped there."`` (empty for an id alone)."""
    parts = line.strip().split(maxsplit=1)
    text = parts[1].lower() if len(parts) == 2 else ""
    return text[:1].upper() + text[1:] + "." if text else ""


def transcript_lines(source: str) -> List[str]:
    """The transcript lines (``ID TEXT``) of a LibriSpeech archive, folder or transcript file."""
    if os.path.isfile(source) and tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            members = sorted((m for m in tar if m.isfile() and m.name.endswith(".trans.txt")), key=lambda m: m.name)
            return [line for m in members for line in tar.extractfile(m).read().decode("utf-8").splitlines()]
    if os.path.isdir(source):
        files = sorted(Path(source).rglob("*.trans.txt"))
        return [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    return Path(source).read_text(encoding="utf-8").splitlines()


def write_lines(path: str, lines: Iterable[str]) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in lines)
    os.replace(path + ".tmp", path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("permute")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("input")
    p.add_argument("output")
    p = sub.add_parser("librispeech")
    p.add_argument("source")
    p.add_argument("output")
    args = parser.parse_args(argv)
    if args.command == "permute":
        lines = Path(args.input).read_text(encoding="utf-8").split("\n")[:-1]
        write_lines(args.output, permuted(lines, args.seed))
    else:
        sentences = [s for s in map(transcript_sentence, transcript_lines(args.source)) if s]
        if not sentences:
            raise SystemExit(f"no LibriSpeech transcript (*.trans.txt) found in {args.source}")
        write_lines(args.output, sentences)
        print(f"librispeech: {len(sentences)} sentences from {args.source}", file=sys.stderr)


if __name__ == "__main__":
    main()
