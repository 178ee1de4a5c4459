"""A deterministic synthetic translation task, for tests and the CPU demo (no download, no fairseq import).

The "languages" are made of pseudo-words built from two disjoint syllable sets. A source sentence is a
sequence of source words drawn from a Zipf distribution; its translation replaces every word by its
translation(s) and swaps the words of every adjacent pair (a local reordering the model must learn).
A fraction of the source words is *ambiguous*: each occurrence is translated by one of two target words at
random, which gives the task real data (aleatoric) uncertainty, and teacher ensembles real disagreement only
where the data does not pin the answer down.

Everything is a pure function of the seed, so the same files are produced on every machine.
"""
from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

SOURCE_SYLLABLES = ("ka", "lo", "mi", "te", "su", "ra", "po", "ni", "ve", "du", "ga", "fe")
TARGET_SYLLABLES = ("bel", "dor", "fin", "gar", "hul", "kes", "lom", "mur", "nix", "pra", "sto", "wen")


def pseudo_words(syllables: Sequence[str], count: int, seed: int) -> List[str]:
    """``count`` distinct pseudo-words of 2-3 syllables, in a seed-determined order."""
    words = ["".join(p) for p in itertools.product(syllables, repeat=2)]
    if count > len(words):
        words += ["".join(p) for p in itertools.product(syllables, repeat=3)]
    if count > len(words):
        raise ValueError(f"at most {len(words)} words can be made from {len(syllables)} syllables, asked {count}")
    rng = random.Random(seed)
    rng.shuffle(words)
    return words[:count]


@dataclass
class SyntheticLanguagePair:
    """A source->target lexicon with ambiguous entries and a pair-swap reordering rule.

    Args:
        vocab_size: number of source words (the target has about ``vocab_size * (1 + ambiguity)`` words).
        ambiguity: fraction of source words with two equally likely translations.
        zipf: exponent of the Zipf distribution over source words.
        seed: everything is derived from it.
    """

    vocab_size: int = 200
    ambiguity: float = 0.2
    zipf: float = 1.0
    seed: int = 1

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.source_words = pseudo_words(SOURCE_SYLLABLES, self.vocab_size, self.seed)
        n_ambiguous = int(round(self.ambiguity * self.vocab_size))
        n_target = self.vocab_size + n_ambiguous
        target_words = pseudo_words(TARGET_SYLLABLES, n_target, self.seed + 1)
        self.lexicon: Dict[str, Tuple[str, ...]] = {}
        ambiguous = set(rng.sample(range(self.vocab_size), n_ambiguous))
        extra = iter(target_words[self.vocab_size :])
        for i, word in enumerate(self.source_words):
            self.lexicon[word] = (target_words[i], next(extra)) if i in ambiguous else (target_words[i],)
        self.weights = [1.0 / (rank + 1) ** self.zipf for rank in range(self.vocab_size)]

    def sample_source(self, rng: random.Random, min_len: int, max_len: int) -> List[str]:
        length = rng.randint(min_len, max_len)
        return rng.choices(self.source_words, weights=self.weights, k=length)

    def translate(self, source: Sequence[str], rng: random.Random) -> List[str]:
        """Word-by-word translation (a random choice for ambiguous words), then swap every adjacent pair."""
        words = [rng.choice(self.lexicon[w]) for w in source]
        for i in range(0, len(words) - 1, 2):
            words[i], words[i + 1] = words[i + 1], words[i]
        return words


def write_parallel_splits(
    out_dir: str,
    pair: SyntheticLanguagePair,
    sizes: Dict[str, int],
    src: str = "src",
    tgt: str = "tgt",
    min_len: int = 3,
    max_len: int = 10,
    seed: int = 0,
) -> Dict[str, str]:
    """Write ``{split}.{src}`` / ``{split}.{tgt}`` text files for each split; returns split -> file prefix."""
    os.makedirs(out_dir, exist_ok=True)
    prefixes = {}
    for index, (split, size) in enumerate(sizes.items()):
        rng = random.Random(seed * 1000 + index)
        prefix = os.path.join(out_dir, split)
        with open(f"{prefix}.{src}", "w", encoding="utf-8") as fs, open(f"{prefix}.{tgt}", "w", encoding="utf-8") as ft:
            for _ in range(size):
                source = pair.sample_source(rng, min_len, max_len)
                fs.write(" ".join(source) + "\n")
                ft.write(" ".join(pair.translate(source, rng)) + "\n")
        prefixes[split] = prefix
    return prefixes
