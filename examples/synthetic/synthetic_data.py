"""A deterministic synthetic translation task, for tests and the CPU demo (no download, no fairseq import).

The two "languages" are made of pseudo-words built from disjoint syllable sets. Source words fall into four
word classes (think determiner, noun, adjective, verb). A source sentence is a sequence of *phrases*, each
following one of a few class templates (``0 1``, ``2 3``, ``0 2 1``, ``3 0 1``), with words drawn from a Zipf
distribution within their class. Its translation replaces every word by its translation and reverses the
word order inside every phrase: the model must find phrase boundaries from the word classes.

A fraction of the source words is *ambiguous*: each occurrence is translated by one of two target words at
random. That gives the task real data (aleatoric) uncertainty, and an ensemble real disagreement only where
the data does not pin the answer down.

Out-of-domain variants for uncertainty evaluation (same lexicon, so no unknown word gives the game away):

* ``rare_words``: the within-class Zipf ranking reversed, so the words seen least in training dominate;
* ``permuted``: in-domain sentences with their source words shuffled, breaking the phrase templates.
  The reference of a shuffled sentence is its word-by-word translation (no phrase to reverse).

Everything is a pure function of the seeds, so the same files are produced on every machine.
"""
from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

DOMAINS = ("in_domain", "rare_words", "permuted")
NUM_WORD_CLASSES = 4
PHRASE_TEMPLATES: Tuple[Tuple[int, ...], ...] = ((0, 1), (2, 3), (0, 2, 1), (3, 0, 1))
SOURCE_SYLLABLES = ("ka", "lo", "mi", "te", "su", "ra", "po", "ni", "ve", "du", "ga", "fe", "zo", "bi")
TARGET_SYLLABLES = ("bel", "dor", "fin", "gar", "hul", "kes", "lom", "mur", "nix", "pra", "sto", "wen", "tav", "quo")


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
    """A source->target lexicon with word classes, ambiguous entries and phrase-reversal reordering.

    Args:
        vocab_size: number of source words (the target has ``vocab_size * (1 + ambiguity)`` words).
        ambiguity: fraction of source words with two equally likely translations.
        zipf: exponent of the Zipf distribution over the words of a class.
        seed: everything is derived from it.
    """

    vocab_size: int = 200
    ambiguity: float = 0.2
    zipf: float = 1.0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.vocab_size < NUM_WORD_CLASSES:
            raise ValueError(f"vocab_size must be >= {NUM_WORD_CLASSES}, got {self.vocab_size}")
        rng = random.Random(self.seed)
        self.source_words = pseudo_words(SOURCE_SYLLABLES, self.vocab_size, self.seed)
        n_ambiguous = int(round(self.ambiguity * self.vocab_size))
        target_words = pseudo_words(TARGET_SYLLABLES, self.vocab_size + n_ambiguous, self.seed + 1)
        ambiguous = set(rng.sample(range(self.vocab_size), n_ambiguous))
        extra = iter(target_words[self.vocab_size :])
        self.lexicon: Dict[str, Tuple[str, ...]] = {
            word: (target_words[i], next(extra)) if i in ambiguous else (target_words[i],)
            for i, word in enumerate(self.source_words)
        }
        # word classes: word i belongs to class i % 4; Zipf rank = position within the class
        self.classes: List[List[str]] = [self.source_words[c::NUM_WORD_CLASSES] for c in range(NUM_WORD_CLASSES)]
        self.class_weights = [
            [1.0 / (rank + 1) ** self.zipf for rank in range(len(words))] for words in self.classes
        ]

    @property
    def target_vocab_size(self) -> int:
        return sum(len(t) for t in self.lexicon.values())

    def sample_phrases(self, rng: random.Random, min_len: int, max_len: int, domain: str) -> List[List[str]]:
        """Phrases of a sentence with ``min_len <= #words <= max_len`` (approximately: whole phrases)."""
        target_len = rng.randint(min_len, max_len)
        phrases: List[List[str]] = []
        length = 0
        while length < target_len:
            template = rng.choice(PHRASE_TEMPLATES)
            phrase = []
            for word_class in template:
                weights = self.class_weights[word_class]
                if domain == "rare_words":
                    weights = weights[::-1]
                phrase.append(rng.choices(self.classes[word_class], weights=weights, k=1)[0])
            phrases.append(phrase)
            length += len(phrase)
        return phrases

    def sample_pair(self, rng: random.Random, min_len: int, max_len: int, domain: str = "in_domain"):
        """``(source words, target words)`` of one sentence pair of ``domain`` (see the module doc)."""
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        phrases = self.sample_phrases(rng, min_len, max_len, "rare_words" if domain == "rare_words" else "in_domain")
        if domain == "permuted":
            source = [w for phrase in phrases for w in phrase]
            rng.shuffle(source)
            return source, [rng.choice(self.lexicon[w]) for w in source]
        source = [w for phrase in phrases for w in phrase]
        target = [rng.choice(self.lexicon[w]) for phrase in phrases for w in reversed(phrase)]
        return source, target


def write_parallel_splits(
    out_dir: str,
    pair: SyntheticLanguagePair,
    sizes: Dict[str, int],
    src: str = "src",
    tgt: str = "tgt",
    min_len: int = 3,
    max_len: int = 10,
    seed: int = 0,
    domains: Dict[str, str] | None = None,
) -> Dict[str, str]:
    """Write ``{split}.{src}`` / ``{split}.{tgt}`` text files for each split; returns split -> file prefix.

    ``domains`` maps a split name to its domain (default ``in_domain``). Each split has its own random
    stream, derived from ``seed`` and the split's name, so adding a split does not change the others.
    """
    domains = domains or {}
    os.makedirs(out_dir, exist_ok=True)
    prefixes = {}
    for split, size in sizes.items():
        rng = random.Random(f"{seed}/{split}")
        prefix = os.path.join(out_dir, split)
        with open(f"{prefix}.{src}", "w", encoding="utf-8") as fs, open(f"{prefix}.{tgt}", "w", encoding="utf-8") as ft:
            for _ in range(size):
                source, target = pair.sample_pair(rng, min_len, max_len, domains.get(split, "in_domain"))
                fs.write(" ".join(source) + "\n")
                ft.write(" ".join(target) + "\n")
        prefixes[split] = prefix
    return prefixes
