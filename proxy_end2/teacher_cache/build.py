"""``proxy-end2-teacher-cache``: run the teacher ensemble once over binarised splits and store what the
distillation criteria need per target token (format: :mod:`proxy_end2.teacher_cache.store`).

    proxy-end2-teacher-cache DATA -s src -t tgt --teacher-paths t1.pt:t2.pt:t3.pt \\
        --gen-subset train,valid --topk 32 --cache-dir CACHE --max-tokens 8192
    fairseq-train DATA --user-dir proxy_end2 --task translation_distillation --teacher-cache CACHE ...

The options are fairseq-generate's (data, ``--task`` (default ``translation_distillation``) and its options,
``--max-tokens``/``--batch-size``, ``--num-shards``/``--shard-id``, ``--cpu``, ``--teacher-dtype``, ...) plus
``--cache-dir``, ``--topk`` and ``--overwrite``; ``--user-dir`` is not needed. The teachers run with
teacher forcing on the batches the task builds from each split, exactly as during online distillation, and
the rows are placed by sentence id, so the training batches find them whatever their composition. On a
machine with several GPUs (and no ``--num-shards``) one process per GPU builds one shard each; otherwise
``--num-shards N --shard-id I`` splits the work between commands run by hand (each writes its own shard).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Optional, Sequence

import torch

from fairseq import options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.logging import progress_bar

from .. import plugin  # noqa: F401  (registers the plugin's tasks: no --user-dir needed)
from ..uncertainty.topk import topk_statistics
from .store import CacheShardWriter, data_fingerprint, shard_dir, teacher_fingerprints

logger = logging.getLogger("proxy_end2.teacher_cache")

#: default number of classes kept per token (``--topk``)
DEFAULT_TOPK = 32


def build_parser():
    parser = options.get_generation_parser(default_task="translation_distillation")
    group = parser.add_argument_group("teacher cache")
    group.add_argument("--cache-dir", required=True, help="folder of the cache (one sub-folder per split)")
    group.add_argument("--topk", type=int, default=DEFAULT_TOPK,
                       help=f"classes of the ensemble mean kept per target token (default {DEFAULT_TOPK}); the "
                       "rest of the mass is stored as one number and spread evenly by the criteria")
    group.add_argument("--overwrite", action="store_true", help="replace complete shards that already exist")
    parser.set_defaults(gen_subset="train,valid")
    return parser


def cache_settings(task_cfg) -> dict:
    """What, besides data and teachers, changes the cached values (recorded; checked when training)."""
    return {"teacher_dtype": str(task_cfg.teacher_dtype), "teacher_stats_dtype": str(task_cfg.teacher_stats_dtype),
            "teacher_model_overrides": str(task_cfg.teacher_model_overrides),
            "truncate_source": bool(getattr(task_cfg, "truncate_source", False))}


def _batches(task, cfg, split: str, teachers):
    dataset = task.dataset(split)
    max_positions = utils.resolve_max_positions(task.max_positions(), *[m.max_positions() for m in teachers.members])
    max_tokens = cfg.dataset.max_tokens or (None if cfg.dataset.batch_size else 8192)
    itr = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_sentences=cfg.dataset.batch_size, max_positions=max_positions,
        ignore_invalid_inputs=cfg.dataset.skip_invalid_size_inputs_valid_test, seed=cfg.common.seed,
        num_shards=cfg.dataset.num_shards, shard_id=cfg.dataset.shard_id, num_workers=cfg.dataset.num_workers,
        data_buffer_size=cfg.dataset.data_buffer_size,
    ).next_epoch_itr(shuffle=False)
    return progress_bar.progress_bar(
        itr, log_format=cfg.common.log_format, log_interval=cfg.common.log_interval, prefix=f"teacher cache {split}",
        default_log_format="simple" if cfg.common.no_progress_bar else "tqdm")


def build_split(task, cfg, teachers, split: str, cache_dir: str, topk: int, overwrite: bool, device) -> dict:
    """Run the teachers over one split (this process's shard of its batches) and write the shard."""
    task.load_dataset(split)
    data_dir = utils.split_paths(cfg.task.data)[0]
    metadata = {"split": split, "shard": cfg.dataset.shard_id, "num_shards": cfg.dataset.num_shards,
                "split_sentences": len(task.dataset(split)), "num_members": len(teachers),
                "data": data_fingerprint(data_dir, split), "teachers": teacher_fingerprints(teachers.paths),
                "settings": cache_settings(cfg.task)}
    num_classes = len(task.target_dictionary)
    writer = CacheShardWriter(shard_dir(cache_dir, split, cfg.dataset.shard_id, cfg.dataset.num_shards), num_classes,
                              topk, metadata, overwrite=overwrite)
    stats_dtype = torch.float64 if cfg.task.teacher_stats_dtype == "fp64" else torch.float32
    pad, start, tail_sum = task.target_dictionary.pad(), time.perf_counter(), 0.0
    progress = _batches(task, cfg, split, teachers)
    for sample in progress:
        if not sample:  # the empty batches that pad a shard
            continue
        sample = utils.move_to_cuda(sample, device) if device.type == "cuda" else sample
        mask = sample["target"].ne(pad)
        compressed = topk_statistics(teachers.statistics(sample["net_input"], stats_dtype=stats_dtype), topk).select(mask)
        writer.append(sample["id"].tolist(), mask.sum(-1).tolist(), compressed)
        tail_sum += float(compressed.tail_log_mass.double().exp().sum())
        progress.log({"tokens": writer.tokens, "tok/s": round(writer.tokens / (time.perf_counter() - start))})
    seconds = time.perf_counter() - start
    manifest = writer.close(build={"seconds": round(seconds, 3), "device": str(device),
                                   "mean_tail_mass": tail_sum / max(1, writer.tokens), "command": sys.argv})
    logger.info(f"{split} shard {cfg.dataset.shard_id}/{cfg.dataset.num_shards}: {manifest['sentences']} sentences, "
                f"{manifest['tokens']} target tokens, {manifest['bytes'] / 2**20:.1f} MiB in {seconds:.1f} s; "
                f"mean tail mass outside the top {topk}: {manifest['build']['mean_tail_mass']:.3g}")
    return manifest


def build(cfg, cache_dir: str, topk: int, overwrite: bool = False, device: Optional[torch.device] = None) -> list:
    """Build every split of ``--gen-subset`` (this process's shard); returns the shard manifests."""
    if not cfg.task.teacher_paths:
        raise ValueError("give the teachers with --teacher-paths t1.pt:t2.pt:...")
    if getattr(cfg.task, "teacher_cache", None):
        raise ValueError("--teacher-cache is the training option; the cache is built into --cache-dir")
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() and not cfg.common.cpu else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    task = tasks.setup_task(cfg.task)
    teachers = task.load_teachers().to(device)
    if not 1 <= topk <= len(task.target_dictionary):
        raise ValueError(f"--topk must be in [1, {len(task.target_dictionary)}] (the target dictionary), got {topk}")
    return [build_split(task, cfg, teachers, split, cache_dir, topk, overwrite, device)
            for split in cfg.dataset.gen_subset.split(",")]


def _gpu_worker(rank: int, argv: Sequence[str], world: int) -> None:
    args = options.parse_args_and_arch(build_parser(), list(argv) + ["--num-shards", str(world), "--shard-id", str(rank)])
    build(convert_namespace_to_omegaconf(args), args.cache_dir, args.topk, args.overwrite, torch.device("cuda", rank))


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = options.parse_args_and_arch(build_parser(), argv)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() and not args.cpu else 0
    if gpus > 1 and args.num_shards == 1:
        logger.info(f"{gpus} GPUs: one shard per GPU")
        torch.multiprocessing.spawn(_gpu_worker, args=(argv, gpus), nprocs=gpus)
        return
    build(convert_namespace_to_omegaconf(args), args.cache_dir, args.topk, args.overwrite)


if __name__ == "__main__":
    main()
