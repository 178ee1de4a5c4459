r"""On-disk format of an offline teacher cache, its writer, its reader and the fingerprints that tie it to the
data and the teachers. numpy and torch only (no fairseq): the build command and the task use it.

Layout: one folder per split and per shard of the build::

    CACHE/<split>/shard-<i>-of-<n>/
        manifest.json           written last: a shard without it is incomplete and never read
        ids.bin                 int64   [S]     sentence ids (dataset indices), in the order written
        lengths.bin             int32   [S]     target tokens of each sentence (EOS included)
        topk_indices.bin        uint16 (K <= 65536) or int32  [N, k]   top-k classes of the ensemble mean
        topk_log_probs.bin      float32 [N, k]  their ln pbar
        tail_log_mass.bin       float32 [N]     ln of the mass outside the top-k
        mkl.bin, epkl.bin, expected_entropy.bin   float32 [N]   the ensemble's scalar measures

``N`` is the shard's number of target tokens; the rows of a sentence are consecutive, in target order. Each
file is raw little-endian data (``numpy.memmap``), appended batch by batch while the cache is built, so the
build never holds more than one batch. The manifest holds the shapes and dtypes, ``K``, ``k``, ``M``, the
sha256 of every file of the binarised split and of the dictionaries, and the sha256 of every teacher
checkpoint; :meth:`TeacherCacheSplit.check` compares them with what a training run has.

Disk use: ``k * (2 + 4) + 16`` bytes per target token with uint16 indices (208 B at ``k = 32``), plus
12 bytes per sentence.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..uncertainty.topk import TopKStatistics

FORMAT = "proxy_end2.teacher_cache"
VERSION = 1
MANIFEST = "manifest.json"
#: per-token arrays: name -> (dtype or None for the index dtype, True when it has a k column)
TOKEN_ARRAYS = {
    "topk_indices": (None, True),
    "topk_log_probs": ("float32", True),
    "tail_log_mass": ("float32", False),
    "mkl": ("float32", False),
    "epkl": ("float32", False),
    "expected_entropy": ("float32", False),
}
SENTENCE_ARRAYS = {"ids": "int64", "lengths": "int32"}
#: TopKStatistics field of each per-token array
STATISTICS_FIELDS = {"topk_indices": "topk_indices", "topk_log_probs": "topk_log_probs",
                     "tail_log_mass": "tail_log_mass", "mkl": "mkl_values", "epkl": "epkl_values",
                     "expected_entropy": "expected_entropy"}


class TeacherCacheError(ValueError):
    """A teacher cache that is missing, incomplete, or does not belong to the data, teachers or settings."""


def index_dtype(num_classes: int) -> str:
    """``uint16`` when every class index fits in it (``K <= 65536``), ``int32`` otherwise."""
    return "uint16" if num_classes <= 2**16 else "int32"


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(data_dir: str | os.PathLike, split: str) -> Dict[str, str]:
    """sha256 of the files of binarised ``split`` in ``data_dir`` (``<split>.*`` and ``<split><n>.*``, the
    parts fairseq combines) and of the dictionaries ``dict.*.txt``, by file name.

    Raises:
        TeacherCacheError: when no file of the split exists.
    """
    pattern = re.compile(rf"^{re.escape(split)}\d*\.")
    names = sorted(os.listdir(data_dir))
    split_files = [n for n in names if pattern.match(n)]
    if not split_files:
        raise TeacherCacheError(f"no file of split {split!r} in {data_dir}")
    files = split_files + [n for n in names if n.startswith("dict.") and n.endswith(".txt")]
    return {name: sha256_file(os.path.join(data_dir, name)) for name in files}


def teacher_fingerprints(paths: Sequence[str]) -> List[Dict]:
    """File name, size and sha256 of each teacher checkpoint."""
    return [{"path": str(p), "bytes": os.path.getsize(p), "sha256": sha256_file(p)} for p in paths]


def shard_dir(cache_dir: str | os.PathLike, split: str, shard: int, num_shards: int) -> Path:
    return Path(cache_dir) / split / f"shard-{shard}-of-{num_shards}"


class CacheShardWriter:
    """Appends the top-k statistics of one build shard to its files; :meth:`close` writes the manifest.

    Args:
        directory: the shard's folder (created; an existing complete shard is refused unless ``overwrite``).
        num_classes, topk: ``K`` and ``k``.
        metadata: the manifest's description of the split, data, teachers and settings.
    """

    def __init__(self, directory: str | os.PathLike, num_classes: int, topk: int, metadata: Mapping,
                 overwrite: bool = False):
        self.directory = Path(directory)
        if (self.directory / MANIFEST).exists() and not overwrite:
            raise TeacherCacheError(f"{self.directory} already holds a complete cache shard; delete it or pass "
                                    "--overwrite to build it again")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / MANIFEST).unlink(missing_ok=True)
        self.num_classes, self.topk, self.metadata = num_classes, topk, dict(metadata)
        self.index_dtype = index_dtype(num_classes)
        names = list(TOKEN_ARRAYS) + list(SENTENCE_ARRAYS)
        self._files = {name: open(self.directory / f"{name}.bin", "wb") for name in names}
        self.sentences = self.tokens = 0

    def append(self, ids: Sequence[int], lengths: Sequence[int], stats: TopKStatistics) -> None:
        """Write sentences ``ids`` with ``lengths`` target tokens whose statistics are the rows of ``stats``
        (leading shape ``[sum(lengths)]``, sentence after sentence, in target order)."""
        lengths = np.asarray(lengths, dtype=np.int32)
        if stats.leading_shape != (int(lengths.sum()),) or stats.topk != self.topk:
            raise ValueError(f"statistics {tuple(stats.leading_shape)} x k={stats.topk} do not match "
                             f"{int(lengths.sum())} target tokens x k={self.topk}")
        self._files["ids"].write(np.asarray(ids, dtype=np.int64).tobytes())
        self._files["lengths"].write(lengths.tobytes())
        for name, (dtype, _) in TOKEN_ARRAYS.items():
            value = getattr(stats, STATISTICS_FIELDS[name]).detach().cpu().numpy()
            self._files[name].write(value.astype(dtype or self.index_dtype, copy=False).tobytes())
        self.sentences += len(lengths)
        self.tokens += int(lengths.sum())

    def close(self, build: Optional[Mapping] = None) -> Dict:
        """Flush the files and write the manifest (last, atomically); returns it."""
        for fh in self._files.values():
            fh.close()
        manifest = {"format": FORMAT, "version": VERSION, **self.metadata, "num_classes": self.num_classes,
                    "topk": self.topk, "index_dtype": self.index_dtype, "sentences": self.sentences,
                    "tokens": self.tokens, "bytes": sum(p.stat().st_size for p in self.directory.glob("*.bin")),
                    "build": dict(build or {})}
        tmp = self.directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        tmp.replace(self.directory / MANIFEST)
        return manifest


@dataclass
class CacheExpectation:
    """What a training run needs of a cache split (None: not checked)."""

    split: str
    num_classes: int
    target_lengths: np.ndarray  # [sentences] target tokens (EOS included) of the run's dataset
    data: Optional[Dict[str, str]] = None  # data_fingerprint of the run's split
    teachers: Optional[List[Dict]] = None  # teacher_fingerprints of --teacher-paths
    topk: Optional[int] = None  # --teacher-cache-topk
    settings: Optional[Dict] = None  # task settings that change what the teachers see (e.g. truncate_source)


class _Shard:
    """The memory-mapped arrays of one complete shard."""

    def __init__(self, directory: Path, manifest: Mapping):
        self.directory, self.manifest = directory, manifest
        n, k = manifest["tokens"], manifest["topk"]

        def mapped(name: str, dtype: str, shape: tuple):
            if shape[0] == 0:
                return np.zeros(shape, dtype=dtype)
            return np.memmap(directory / f"{name}.bin", dtype=dtype, mode="r", shape=shape)

        self.sentence = {name: mapped(name, dtype, (manifest["sentences"],)) for name, dtype in SENTENCE_ARRAYS.items()}
        self.token = {name: mapped(name, dtype or manifest["index_dtype"], (n, k) if has_k else (n,))
                      for name, (dtype, has_k) in TOKEN_ARRAYS.items()}
        self.starts = np.concatenate([[0], np.cumsum(self.sentence["lengths"], dtype=np.int64)[:-1]])


def _row_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` of every (start, length) pair, int64."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts.astype(np.int64) - np.cumsum(lengths, dtype=np.int64) + lengths, lengths)
    return offsets + np.arange(total, dtype=np.int64)


def _read_manifests(root: Path) -> Dict[Path, Dict]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"shard-\d+-of-\d+", p.name))
    if not folders:
        raise TeacherCacheError(f"{root} holds no cache shard (shard-<i>-of-<n> folders)")
    incomplete = [p.name for p in folders if not (p / MANIFEST).exists()]
    if incomplete:
        raise TeacherCacheError(f"cache shards {incomplete} in {root} are incomplete (no {MANIFEST}): their build "
                                "did not finish; build them again")
    manifests = {p: json.loads((p / MANIFEST).read_text()) for p in folders}
    for path, manifest in manifests.items():
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise TeacherCacheError(f"{path / MANIFEST} is not a {FORMAT} version {VERSION} manifest")
    return manifests


#: manifest entries that every shard of a split must share
SHARED_KEYS = ("split", "num_shards", "split_sentences", "num_classes", "topk", "num_members", "index_dtype",
               "data", "teachers", "settings")


class TeacherCacheSplit:
    """One split of a teacher cache: its shards, memory-mapped, and an index from sentence id to rows.

    Raises:
        TeacherCacheError: no cache of the split in ``cache_dir``, an incomplete or missing shard, shards of
            different builds, or a sentence cached twice.
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str):
        root = Path(cache_dir) / split
        if not root.is_dir():
            present = sorted(p.name for p in Path(cache_dir).iterdir() if p.is_dir()) if Path(cache_dir).is_dir() else []
            raise TeacherCacheError(f"teacher cache {cache_dir} has no split {split!r} (it has: {present or 'nothing'}); "
                                    f"build it with proxy-end2-teacher-cache ... --gen-subset {split}")
        manifests = _read_manifests(root)
        first = next(iter(manifests.values()))
        for path, manifest in manifests.items():
            differing = [key for key in SHARED_KEYS if manifest.get(key) != first.get(key)]
            if differing:
                raise TeacherCacheError(f"cache shards of {root} come from different builds ({path.name} differs in "
                                        f"{differing}); delete the split's folder and build it again")
        wanted = {f"shard-{i}-of-{first['num_shards']}" for i in range(first["num_shards"])}
        if {p.name for p in manifests} != wanted:
            raise TeacherCacheError(f"{root} should hold exactly the shards {sorted(wanted)}, found "
                                    f"{sorted(p.name for p in manifests)}")
        self.root, self.split = root, split
        self.manifest = dict(first, sentences=sum(m["sentences"] for m in manifests.values()),
                             tokens=sum(m["tokens"] for m in manifests.values()),
                             bytes=sum(m["bytes"] for m in manifests.values()))
        self.shards = [_Shard(path, manifest) for path, manifest in manifests.items()]
        self._index()

    def _index(self) -> None:
        size = int(self.manifest["split_sentences"])
        self.shard_of = np.full(size, -1, dtype=np.int64)
        self.position_of = np.full(size, -1, dtype=np.int64)
        for number, shard in enumerate(self.shards):
            ids = np.asarray(shard.sentence["ids"])
            if ids.size and (ids.min() < 0 or ids.max() >= size or (self.shard_of[ids] >= 0).any()
                             or np.unique(ids).size != ids.size):
                raise TeacherCacheError(f"{shard.directory}: sentence ids out of range or cached twice; build the "
                                        "split again")
            self.shard_of[ids] = number
            self.position_of[ids] = np.arange(ids.size)
        self.missing = int((self.shard_of < 0).sum())

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def topk(self) -> int:
        return int(self.manifest["topk"])

    @property
    def num_members(self) -> int:
        return int(self.manifest["num_members"])

    def cached_lengths(self, ids: np.ndarray) -> np.ndarray:
        """Target tokens cached for each sentence of ``ids`` (-1 where a sentence is not cached)."""
        out = np.full(len(ids), -1, dtype=np.int64)
        for number, shard in enumerate(self.shards):
            here = self.shard_of[ids] == number
            out[here] = shard.sentence["lengths"][self.position_of[ids[here]]]
        return out

    def check(self, expect: CacheExpectation) -> None:
        """Refuse a cache built for other data, dictionaries, teachers or ``k`` (:class:`TeacherCacheError`
        naming the difference), before any training step."""
        where, m = f"teacher cache {self.root}", self.manifest
        if m["num_classes"] != expect.num_classes:
            raise TeacherCacheError(f"{where} has K = {m['num_classes']} classes, the task's target dictionary "
                                    f"has {expect.num_classes}: it was built for other data")
        if expect.topk is not None and m["topk"] != expect.topk:
            raise TeacherCacheError(f"{where} keeps the top {m['topk']} classes, the run asks for "
                                    f"--teacher-cache-topk {expect.topk}: build it again with --topk {expect.topk}")
        if expect.data is not None:
            _check_data(where, m["data"], expect.data)
        if expect.teachers is not None:
            built = sorted(t["sha256"] for t in m["teachers"])
            if built != sorted(t["sha256"] for t in expect.teachers):
                names = ", ".join(t["path"] for t in m["teachers"])
                raise TeacherCacheError(f"{where} was built from other teachers ({names}) than --teacher-paths "
                                        "(their sha256 differ): build the cache again from these teachers")
        for key, value in (expect.settings or {}).items():
            if key in m["settings"] and m["settings"][key] != value:
                raise TeacherCacheError(f"{where} was built with {key} = {m['settings'][key]!r}, the run has "
                                        f"{value!r}: the teachers saw other inputs; build it again")
        lengths = np.asarray(expect.target_lengths)
        if lengths.size != m["split_sentences"]:
            raise TeacherCacheError(f"{where} was built for {m['split_sentences']} sentences, the run's split "
                                    f"{self.split!r} has {lengths.size}: it was built for other data")
        ids = np.flatnonzero(self.shard_of >= 0)
        wrong = np.flatnonzero(self.cached_lengths(ids) != lengths[ids])
        if wrong.size:
            raise TeacherCacheError(f"{where}: {wrong.size} sentences have another number of target tokens than in "
                                    f"the run's data (first: sentence {ids[wrong[0]]}): it was built for other data")

    def statistics(self, ids: Sequence[int], mask: Tensor) -> Dict[str, Tensor]:
        """The cached statistics of the batch of sentences ``ids`` whose target positions are ``mask``
        ``[B, T]`` (True at the non-pad ones): tensors ``[B, T, k]`` / ``[B, T]`` on the CPU, named as the
        fields of :class:`~proxy_end2.uncertainty.TopKStatistics`; padded positions hold a valid dummy
        distribution (the criteria drop them).

        Raises:
            TeacherCacheError: a sentence is not in the cache, or has another number of target tokens.
        """
        ids = np.asarray(ids, dtype=np.int64)
        mask = mask.cpu()
        lengths = mask.sum(-1).numpy()
        cached = self.cached_lengths(ids)
        if (cached != lengths).any():
            bad = int(np.flatnonzero(cached != lengths)[0])
            raise TeacherCacheError(
                f"teacher cache {self.root}: sentence {ids[bad]} has {lengths[bad]} target tokens in the batch but "
                + ("is not in the cache" if cached[bad] < 0 else f"{cached[bad]} in the cache") + ": rebuild it")
        rows = {name: [] for name in TOKEN_ARRAYS}
        order = []
        for number, shard in enumerate(self.shards):
            here = np.flatnonzero(self.shard_of[ids] == number)
            if here.size == 0:
                continue
            position = self.position_of[ids[here]]
            index = _row_index(shard.starts[position], shard.sentence["lengths"][position])
            order.append(np.repeat(here, lengths[here]))
            for name in TOKEN_ARRAYS:
                rows[name].append(shard.token[name][index])
        return _batch_layout(rows, order, mask, self.topk)


def _check_data(where: str, built: Mapping[str, str], run: Mapping[str, str]) -> None:
    for name in sorted(set(built) | set(run)):
        if built.get(name) != run.get(name):
            what = "dictionary" if name.startswith("dict.") else "data file"
            state = ("is missing from the run's data" if name not in run else "was not part of the cache's data"
                     if name not in built else "differs from the one the cache was built from (sha256)")
            raise TeacherCacheError(f"{where}: {what} {name} {state}: the cache belongs to other data; build it "
                                    "again from this data")


def _batch_layout(rows: Dict[str, list], order: list, mask: Tensor, topk: int) -> Dict[str, Tensor]:
    """Rows gathered per shard -> ``[B, T(, k)]`` tensors in the batch's layout (``mask`` order)."""
    batch_of_row = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    sort = np.argsort(batch_of_row, kind="stable")  # rows of sentence 0 first, each in target order
    b, t = mask.shape
    out = {}
    for name, (dtype, has_k) in TOKEN_ARRAYS.items():
        values = np.concatenate(rows[name])[sort] if rows[name] else np.zeros((0, topk) if has_k else (0,))
        if name == "topk_indices":
            full = torch.arange(topk, dtype=torch.int64).expand(b, t, topk).clone()
            full[mask] = torch.from_numpy(values.astype(np.int64))
        else:
            fill = {"topk_log_probs": -math.log(topk), "tail_log_mass": -math.inf}.get(name, 0.0)
            full = torch.full((b, t, topk) if has_k else (b, t), fill, dtype=torch.float32)
            full[mask] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        out[STATISTICS_FIELDS[name]] = full
    return out
