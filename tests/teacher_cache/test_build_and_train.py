"""The offline teacher cache with fairseq: proxy-end2-teacher-cache on real binarised data and checkpoints, then
training from it (--teacher-cache) with no teacher in memory; stale caches and EnD^2 refused before training."""
import shutil

import pytest
import torch

from fairseq import tasks

from conftest import SRC, TGT, run_fairseq
from fairseq_helpers import build_cfg
from proxy_end2.constants import TEACHER_STATS_KEY
from proxy_end2.teacher_cache.build import main as build_main
from proxy_end2.teacher_cache.store import TeacherCacheError, TeacherCacheSplit
from proxy_end2.uncertainty import TopKStatistics, topk_statistics

TOPK = 8


def _build(data, teachers, cache, *extra):
    build_main([str(data), "-s", SRC, "-t", TGT, "--teacher-paths", ":".join(map(str, teachers)), "--cpu",
                "--cache-dir", str(cache), "--topk", str(TOPK), "--max-tokens", "2048", "--no-progress-bar", *extra])


@pytest.fixture(scope="module")
def cache(tiny_data, quick_teachers, tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher_cache") / "cache"
    _build(tiny_data, quick_teachers, path)  # train and valid (the default --gen-subset)
    return path


def _task(data, cache, *extra, criterion="proxy_dirichlet_distillation"):
    cfg = build_cfg(data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                           "--criterion", criterion, "--teacher-cache", str(cache), *extra])
    return cfg, tasks.setup_task(cfg.task)


def test_cached_rows_are_the_online_top_k_of_the_teachers(tiny_data, quick_teachers, cache):
    cfg, task = _task(tiny_data, cache, "--teacher-paths", ":".join(map(str, quick_teachers)))
    task.load_dataset("valid")
    sample = next(task.get_batch_iterator(task.dataset("valid"), max_sentences=5).next_epoch_itr(shuffle=False))
    cached = TopKStatistics(**sample["teacher_cache"], num_classes=len(task.target_dictionary), num_members=2)
    online = topk_statistics(task.load_teachers().statistics(sample["net_input"]), TOPK)
    mask = sample["target"].ne(task.target_dictionary.pad())
    cached, online = cached.select(mask), online.select(mask)
    assert torch.equal(cached.topk_indices, online.topk_indices)  # other batches, other padding: same classes
    for name in ("topk_log_probs", "tail_log_mass", "mkl_values", "epkl_values", "expected_entropy"):
        torch.testing.assert_close(getattr(cached, name), getattr(online, name), rtol=1e-4, atol=1e-5, msg=name)


def test_a_sharded_build_holds_the_same_rows(tiny_data, quick_teachers, cache, tmp_path):
    for shard in (0, 1):
        _build(tiny_data, quick_teachers, tmp_path / "sharded", "--gen-subset", "valid", "--num-shards", "2",
               "--shard-id", str(shard))
    whole, sharded = TeacherCacheSplit(cache, "valid"), TeacherCacheSplit(tmp_path / "sharded", "valid")
    assert whole.missing == sharded.missing == 0 and len(sharded.shards) == 2
    ids = list(range(0, 100, 7))
    mask = torch.zeros(len(ids), 40, dtype=torch.bool)
    lengths = whole.cached_lengths(torch.tensor(ids).numpy())
    for row, length in enumerate(lengths):
        mask[row, :length] = True
    a, b = whole.statistics(ids, mask), sharded.statistics(ids, mask)
    assert torch.equal(a["topk_indices"], b["topk_indices"])
    torch.testing.assert_close(a["topk_log_probs"], b["topk_log_probs"], rtol=1e-5, atol=1e-6)


def test_train_step_from_the_cache_loads_no_teacher(tiny_data, cache):
    cfg, task = _task(tiny_data, cache)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    assert task.teachers is None
    task.load_dataset("train")
    sample = next(task.get_batch_iterator(task.dataset("train"), max_sentences=4).next_epoch_itr(shuffle=False))
    seen = {}
    original = criterion.forward
    criterion.forward = lambda m, s, reduce=True: (seen.setdefault("stats", s[TEACHER_STATS_KEY]), original(m, s, reduce))[1]

    class _Opt:
        def backward(self, loss):
            loss.backward()

    loss, _, log = task.train_step(sample, model, criterion, _Opt(), update_num=0)
    assert isinstance(seen["stats"], TopKStatistics) and task.teachers is None
    assert torch.isfinite(loss) and log["ensemble_mkl"] > 0
    assert any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("criterion", ["dirichlet_nll_distillation", "forward_proxy_dirichlet_distillation"])
def test_criteria_needing_every_member_refuse_the_cache_before_training(tiny_data, cache, criterion):
    cfg, task = _task(tiny_data, cache, criterion=criterion)
    with pytest.raises(ValueError, match="needs every teacher's full distribution"):
        task.build_criterion(cfg.criterion)


def test_a_cache_of_other_teachers_data_or_k_is_refused(tiny_data, quick_teachers, cache, tmp_path):
    _, task = _task(tiny_data, cache, "--teacher-paths", str(quick_teachers[0]))
    with pytest.raises(TeacherCacheError, match="other teachers"):
        task.load_dataset("valid")
    _, task = _task(tiny_data, cache, "--teacher-cache-topk", "16")
    with pytest.raises(TeacherCacheError, match="--teacher-cache-topk 16"):
        task.load_dataset("valid")
    _, task = _task(tiny_data, cache)
    with pytest.raises(TeacherCacheError, match="has no split 'test'"):
        task.load_dataset("test")
    other = tmp_path / "other_data"
    shutil.copytree(tiny_data, other)
    with open(other / f"valid.{SRC}-{TGT}.{TGT}.bin", "r+b") as fh:  # one target token changed
        fh.seek(8)
        byte = fh.read(1)
        fh.seek(8)
        fh.write(bytes([byte[0] ^ 1]))
    _, task = _task(other, cache)
    with pytest.raises(TeacherCacheError, match=f"data file valid.{SRC}-{TGT}.{TGT}.bin differs"):
        task.load_dataset("valid")


@pytest.mark.slow
def test_fairseq_train_from_the_cache(tiny_data, cache, tmp_path):
    out = run_fairseq("train", [
        tiny_data, "--user-dir", str(__import__("conftest").USER_DIR), "--task", "translation_distillation",
        "-s", SRC, "-t", TGT, "--teacher-cache", cache, "--arch", "prior_transformer_tiny",
        "--criterion", "proxy_dirichlet_distillation", "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "512",
        "--max-update", "3", "--save-dir", tmp_path / "student", "--num-workers", "1", "--cpu",
        "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "1"], tmp_path / "train.log")
    assert "no teacher loaded" in out and "loaded teacher" not in out
    assert "num_updates 3" in out or "num_updates\": 3" in out
    assert (tmp_path / "student" / "checkpoint_last.pt").exists()
