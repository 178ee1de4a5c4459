"""The teacher cache's files: written in shards, read back by sentence id in any batch layout, and refused
when they do not belong to the run (proxy_end2.teacher_cache.store; no fairseq)."""
import json
import math

import numpy as np
import pytest
import torch

from proxy_end2.teacher_cache.store import (
    CacheExpectation,
    CacheShardWriter,
    TeacherCacheError,
    TeacherCacheSplit,
    data_fingerprint,
    shard_dir,
    teacher_fingerprints,
)
from proxy_end2.uncertainty import ensemble_statistics, topk_statistics

K, TOPK = 300, 4
LENGTHS = np.array([3, 1, 5, 2, 4, 2, 6])  # target tokens of the 7 sentences of the split


def _metadata(data_dir, teacher_files, shard, num_shards, **changes):
    meta = {"split": "train", "shard": shard, "num_shards": num_shards, "split_sentences": len(LENGTHS),
            "num_members": 2, "data": data_fingerprint(data_dir, "train"),
            "teachers": teacher_fingerprints([str(p) for p in teacher_files]), "settings": {"truncate_source": False}}
    return dict(meta, **changes)


def _sentence_stats(sentence: int):
    """Statistics of one sentence's target tokens, reproducible from its id."""
    g = torch.Generator().manual_seed(100 + sentence)
    stats = ensemble_statistics(2.0 * torch.randn(int(LENGTHS[sentence]), 2, K, generator=g))
    return topk_statistics(stats, TOPK)


def _cat(parts):
    from proxy_end2.uncertainty.topk import TopKStatistics

    return TopKStatistics(**{name: torch.cat([getattr(p, name) for p in parts]) for name in
                             ("topk_indices", "topk_log_probs", "tail_log_mass", "mkl_values", "epkl_values",
                              "expected_entropy")}, num_classes=K, num_members=2)


@pytest.fixture
def files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.src-tgt.src.bin", "train.src-tgt.tgt.bin", "dict.src.txt", "dict.tgt.txt", "valid.src-tgt.src.bin"):
        (data / name).write_text(name)
    teachers = [tmp_path / "t1.pt", tmp_path / "t2.pt"]
    for t in teachers:
        t.write_bytes(t.name.encode())
    return data, teachers


def _write(cache, data, teachers, shards=((0, 2, 5), (4, 3, 6)), **changes):
    for number, ids in enumerate(shards):
        writer = CacheShardWriter(shard_dir(cache, "train", number, len(shards)), K, TOPK,
                                  _metadata(data, teachers, number, len(shards), **changes))
        for batch in (ids[:2], ids[2:]):  # two appends per shard
            if batch:
                writer.append(batch, LENGTHS[list(batch)], _cat([_sentence_stats(i) for i in batch]))
        writer.close({"seconds": 1.0})


def _expect(data, teacher_files, **changes):
    base = dict(split="train", num_classes=K, target_lengths=LENGTHS, data=data_fingerprint(data, "train"),
                teachers=teacher_fingerprints([str(p) for p in teacher_files]), topk=TOPK)
    return CacheExpectation(**dict(base, **changes))


def test_rows_come_back_by_sentence_id_in_the_batch_layout(tmp_path, files):
    data, teachers = files
    _write(tmp_path / "cache", data, teachers)
    split = TeacherCacheSplit(tmp_path / "cache", "train")
    split.check(_expect(data, teachers))
    assert split.manifest["sentences"] == 6 and split.missing == 1  # sentence 1 was not written
    ids = [6, 0, 3]
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, :6] = True
    mask[1, 4:7] = True  # a left-padded sentence
    mask[2, :2] = True
    fields = split.statistics(ids, mask)
    assert fields["topk_indices"].shape == (3, 7, TOPK) and fields["mkl_values"].shape == (3, 7)
    for row, sentence in enumerate(ids):
        want = _sentence_stats(sentence)
        assert torch.equal(fields["topk_indices"][row][mask[row]], want.topk_indices)
        assert torch.equal(fields["topk_log_probs"][row][mask[row]], want.topk_log_probs)
        for name in ("tail_log_mass", "mkl_values", "epkl_values", "expected_entropy"):
            assert torch.equal(fields[name][row][mask[row]], getattr(want, name)), name
    assert torch.equal(fields["tail_log_mass"][~mask], torch.full((int((~mask).sum()),), -math.inf))


def test_a_sentence_not_in_the_cache_or_of_another_length_is_an_error(tmp_path, files):
    data, teachers = files
    _write(tmp_path / "cache", data, teachers)
    split = TeacherCacheSplit(tmp_path / "cache", "train")
    with pytest.raises(TeacherCacheError, match="sentence 1 .* not in the cache"):
        split.statistics([1], torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(TeacherCacheError, match="sentence 0 has 2 target tokens in the batch but 3 in the cache"):
        split.statistics([0], torch.tensor([[True, True, False]]))


def test_files_have_the_documented_sizes(tmp_path, files):
    data, teachers = files
    _write(tmp_path / "cache", data, teachers)
    manifest = json.loads((shard_dir(tmp_path / "cache", "train", 0, 2) / "manifest.json").read_text())
    tokens = int(LENGTHS[[0, 2, 5]].sum())
    assert manifest["index_dtype"] == "uint16" and manifest["tokens"] == tokens
    assert manifest["bytes"] == tokens * (TOPK * (2 + 4) + 16) + 3 * 12  # store.py's docstring


@pytest.mark.parametrize("change, message", [
    (dict(num_classes=K + 1), "K = 300 classes, the task's target dictionary has 301"),
    (dict(topk=TOPK * 2), "keeps the top 4 classes, the run asks for --teacher-cache-topk 8"),
    (dict(target_lengths=LENGTHS[:-1]), "built for 7 sentences, the run's split 'train' has 6"),
    (dict(target_lengths=LENGTHS + 1), "6 sentences have another number of target tokens"),
])
def test_a_cache_for_other_data_or_k_is_refused(tmp_path, files, change, message):
    data, teachers = files
    _write(tmp_path / "cache", data, teachers)
    with pytest.raises(TeacherCacheError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TeacherCacheSplit(tmp_path / "cache", "train").check(_expect(data, teachers, **change))


def test_changed_data_dictionary_or_teachers_are_refused(tmp_path, files):
    data, teachers = files
    _write(tmp_path / "cache", data, teachers)
    split = TeacherCacheSplit(tmp_path / "cache", "train")
    (data / "train.src-tgt.tgt.bin").write_text("other targets")
    with pytest.raises(TeacherCacheError, match="data file train.src-tgt.tgt.bin differs"):
        split.check(_expect(data, teachers))
    (data / "train.src-tgt.tgt.bin").write_text("train.src-tgt.tgt.bin")
    (data / "dict.tgt.txt").write_text("another dictionary")
    with pytest.raises(TeacherCacheError, match="dictionary dict.tgt.txt differs"):
        split.check(_expect(data, teachers))
    (data / "dict.tgt.txt").write_text("dict.tgt.txt")
    teachers[1].write_bytes(b"retrained")
    with pytest.raises(TeacherCacheError, match="other teachers"):
        split.check(_expect(data, teachers))
    split.check(_expect(data, teachers, teachers=None))  # without --teacher-paths the teachers are not checked
    with pytest.raises(TeacherCacheError, match="truncate_source"):
        split.check(_expect(data, teachers, teachers=None, settings={"truncate_source": True}))


def test_incomplete_foreign_or_missing_shards_are_refused(tmp_path, files):
    data, teachers = files
    cache = tmp_path / "cache"
    with pytest.raises(TeacherCacheError, match="has no split 'train'"):
        TeacherCacheSplit(cache, "train")
    _write(cache, data, teachers)
    _write(cache, data, teachers, shards=((0, 2, 5, 1, 4, 3, 6),))  # a second build with one shard, in the same folder
    with pytest.raises(TeacherCacheError, match="different builds"):
        TeacherCacheSplit(cache, "train")
    (shard_dir(cache, "train", 1, 2) / "manifest.json").unlink()
    with pytest.raises(TeacherCacheError, match=r"shard-1-of-2.* incomplete"):
        TeacherCacheSplit(cache, "train")


def test_a_complete_shard_is_not_overwritten_by_accident(tmp_path, files):
    data, teachers = files
    _write(tmp_path / "cache", data, teachers)
    with pytest.raises(TeacherCacheError, match="already holds a complete cache shard"):
        CacheShardWriter(shard_dir(tmp_path / "cache", "train", 0, 2), K, TOPK, {})
    CacheShardWriter(shard_dir(tmp_path / "cache", "train", 0, 2), K, TOPK, {}, overwrite=True).close()


def test_sentences_cached_twice_are_refused(tmp_path, files):
    data, teachers = files
    _write(tmp_path / "cache", data, teachers, shards=((0, 2), (2, 4)))
    with pytest.raises(TeacherCacheError, match="cached twice"):
        TeacherCacheSplit(tmp_path / "cache", "train")
