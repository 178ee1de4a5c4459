"""Where the time of one distillation step goes on CPU: teachers, student forward, criterion, backward, optimizer.

Uses the output folder of the synthetic example's main job (``examples/synthetic``: its ``data-bin/`` and
``teachers/teacher*/checkpoint_best.pt``), builds a ``prior_transformer_tiny`` student and times ``--steps``
training steps of ``--criterion`` (milliseconds per step, mean, wall clock). The criterion's time includes a
second student forward (it runs the model itself). Run it with and without glibc's malloc thresholds to see
what the main job's ``MALLOC_ENV`` (``examples/synthetic/main_job.py``) buys::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/student_step_profile.py runs/main_job
    OMP_NUM_THREADS=1 MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        PYTHONPATH=. python benchmarks/student_step_profile.py runs/main_job

Needs fairseq.
"""
import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import torch

from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import proxy_end2
import proxy_end2.plugin  # noqa: F401  (registers the task, model and criteria with fairseq)
from proxy_end2.constants import TEACHER_STATS_KEY

USER_DIR = os.path.dirname(os.path.abspath(proxy_end2.__file__))  # fairseq --user-dir
SRC, TGT = "src", "tgt"  # the language suffixes of the main job's data-bin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path, help="a main-job output folder (data-bin/, teachers/teacher*/checkpoint_best.pt)")
    parser.add_argument("--criterion", default="proxy_dirichlet_distillation")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    teachers = sorted(str(p) for p in args.job.glob("teachers/teacher*/checkpoint_best.pt"))
    train_parser = options.get_training_parser()
    fairseq_args = options.parse_args_and_arch(train_parser, [
        str(args.job / "data-bin"), "--user-dir", USER_DIR, "--task", "translation_distillation", "-s", SRC,
        "-t", TGT, "--teacher-paths", ":".join(teachers), "--arch", "prior_transformer_tiny",
        "--criterion", args.criterion, "--max-tokens", str(args.max_tokens), "--cpu",
        "--share-decoder-input-output-embed"])
    cfg = convert_namespace_to_omegaconf(fairseq_args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    batches = task.get_batch_iterator(task.dataset("train"), max_tokens=args.max_tokens, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = defaultdict(float)
    steps = 0
    for sample in batches.next_epoch_itr(shuffle=True):
        if steps == args.steps:
            break
        start = time.perf_counter()
        with torch.no_grad():
            sample[TEACHER_STATS_KEY] = task.teachers.statistics(sample["net_input"])
        seconds["teachers"] += time.perf_counter() - start
        start = time.perf_counter()
        model(**sample["net_input"])
        seconds["student forward"] += time.perf_counter() - start
        start = time.perf_counter()
        loss, _, _ = criterion(model, sample)
        seconds["criterion (with a student forward)"] += time.perf_counter() - start
        start = time.perf_counter()
        loss.backward()
        seconds["backward"] += time.perf_counter() - start
        start = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        seconds["optimizer"] += time.perf_counter() - start
        steps += 1
    print(f"{args.criterion}, {steps} steps of <= {args.max_tokens} tokens, {torch.get_num_threads()} thread(s): "
          + ", ".join(f"{name} {total / steps * 1000:.1f} ms" for name, total in seconds.items()))


if __name__ == "__main__":
    main()
