"""Plain text from the WMT17 En-De archives, read in place (nothing is extracted to disk but the text).

    python wmt_archives.py --raw-dir ORIG --out-dir TEXT_RAW

writes, one sentence per line, into ``--out-dir``:

* ``train.en`` / ``train.de``: Europarl v7, Common Crawl, News Commentary v12 and Rapid 2016, in that order;
* ``valid.*`` (newstest2013), ``test.*`` (newstest2014, full version, 3003 sentences), ``test2017.*``
  (newstest2017), ``newstest2014.fr`` (the French side of newstest2014 fr-en, an out-of-domain source);

each file is written under a temporary name and renamed when complete. The archive names (files in
``--raw-dir``) and the paths inside them are those of :data:`TRAIN_CORPORA` and :data:`TEST_SETS`; the test
sets are WMT's SGML files, reduced to their ``<seg>`` text exactly as sacrebleu reads them (so BLEU against
these files is sacrebleu's BLEU against the official references).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tarfile
from typing import Iterable, Iterator, List, Tuple

#: (archive in --raw-dir, path of the corpus inside it without the .en/.de suffix)
TRAIN_CORPORA: List[Tuple[str, str]] = [
    ("training-parallel-europarl-v7.tgz", "training/europarl-v7.de-en"),
    ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en"),
    ("training-parallel-nc-v12.tgz", "training/news-commentary-v12.de-en"),
    ("rapid2016.tgz", "rapid2016.de-en"),
]
#: output file -> (archive in --raw-dir, SGML file inside it)
TEST_SETS = {
    "valid.en": ("wmt13-test.tgz", "test/newstest2013-src.en.sgm"),
    "valid.de": ("wmt13-test.tgz", "test/newstest2013-src.de.sgm"),
    "test.en": ("test-full.tgz", "test-full/newstest2014-deen-src.en.sgm"),
    "test.de": ("test-full.tgz", "test-full/newstest2014-deen-ref.de.sgm"),
    "test2017.en": ("test.tgz", "test/newstest2017-ende-src.en.sgm"),
    "test2017.de": ("test.tgz", "test/newstest2017-ende-ref.de.sgm"),
    "newstest2014.fr": ("test-full.tgz", "test-full/newstest2014-fren-src.fr.sgm"),
}
_SEG = re.compile(r"<seg.*?>(.*)</seg>.*?")


def member_lines(archive: str, member: str) -> Iterator[str]:
    """The lines (without newline; invalid UTF-8 replaced) of ``member`` of the tar archive ``archive``, streamed;
    a clear error if it is missing."""
    with tarfile.open(archive) as tar:
        try:
            handle = tar.extractfile(member)
        except KeyError:
            raise SystemExit(f"{archive}: no member {member} (is it the WMT archive it should be?)") from None
        if handle is None:
            raise SystemExit(f"{archive}: {member} is not a regular file")
        for raw in handle:
            yield raw.decode("utf-8", errors="replace").rstrip("\n")


def sgm_segments(lines: Iterable[str]) -> List[str]:
    """The text of the ``<seg ...>...</seg>`` lines of a WMT SGML file, whitespace collapsed (sacrebleu's way)."""
    return [re.sub(r"\s+", " ", _SEG.sub(r"\1", line).strip()) for line in lines if line.startswith("<seg ")]


def write_to(handle, lines: Iterable[str]) -> int:
    """Write ``lines`` to an open file, one per line (line breaks inside a line become spaces); returns the count."""
    count = 0
    for line in lines:
        handle.write(line.replace("\r", " ") + "\n")
        count += 1
    return count


def write_lines(path: str, lines: Iterable[str]) -> int:
    """Write ``lines`` to ``path`` via a temporary file; returns the count."""
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        count = write_to(out, lines)
    os.replace(path + ".tmp", path)
    return count


def extract_train(raw_dir: str, out_dir: str) -> None:
    """``train.en`` / ``train.de``: the training corpora in :data:`TRAIN_CORPORA` order, streamed; every corpus
    must have as many English as German lines."""
    outs = {lang: open(os.path.join(out_dir, f"train.{lang}.tmp"), "w", encoding="utf-8") for lang in ("en", "de")}
    try:
        for archive, stem in TRAIN_CORPORA:
            path = os.path.join(raw_dir, archive)
            counts = {lang: write_to(outs[lang], member_lines(path, f"{stem}.{lang}")) for lang in outs}
            if counts["en"] != counts["de"]:
                raise SystemExit(f"{path}: {stem}.en has {counts['en']} lines but {stem}.de has {counts['de']}")
            print(f"{archive}: {counts['en']} sentence pairs", file=sys.stderr)
    finally:
        for handle in outs.values():
            handle.close()
    for lang in outs:
        os.replace(os.path.join(out_dir, f"train.{lang}.tmp"), os.path.join(out_dir, f"train.{lang}"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-dir", required=True, help="folder with the WMT archives")
    parser.add_argument("--out-dir", required=True, help="where the plain text files go")
    args = parser.parse_args(argv)
    needed = sorted({a for a, _ in TRAIN_CORPORA} | {a for a, _ in TEST_SETS.values()})
    missing = [a for a in needed if not os.path.isfile(os.path.join(args.raw_dir, a))]
    if missing:
        raise SystemExit(f"missing in {args.raw_dir}: {', '.join(missing)}")
    os.makedirs(args.out_dir, exist_ok=True)
    for name, (archive, member) in TEST_SETS.items():
        n = write_lines(os.path.join(args.out_dir, name), sgm_segments(member_lines(
            os.path.join(args.raw_dir, archive), member)))
        print(f"{name}: {n} sentences from {archive}:{member}", file=sys.stderr)
    extract_train(args.raw_dir, args.out_dir)


if __name__ == "__main__":
    main()
