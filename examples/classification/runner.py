"""Command line shared by ``run_digits.py`` and ``run_spiral.py``: parse, run every seed, write
``results.json`` / ``results.md`` into ``--out``, print the table."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from distil_kit.reporting import cpu_seconds, machine_info, setup_logging, write_json
from classification_experiment import ClassificationConfig, SeedOutcome, Task, run_seed
from classification_report import results_table, summarise_seeds

logger = logging.getLogger(__name__)

Figure = Callable[[Task, SeedOutcome, Path], None]
"""Optional figure of the first seed's models, written into the output folder."""


#: ``--quick`` writes under the repository's ``runs/`` (ignored by git), never over the recorded results.
QUICK_ROOT = Path(__file__).resolve().parents[2] / "runs" / "examples"


def quick_out(default_out: Path) -> Path:
    """Default output folder of ``--quick``: ``runs/examples/<task>_quick``."""
    return QUICK_ROOT / f"{default_out.name}_quick"


def parse_args(description: str, default_out: Path, argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="reduced sizes (1 seed, short training): tests")
    p.add_argument("--out", type=Path, help=f"output folder (default {default_out}; with --quick "
                   f"{quick_out(default_out)})")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (the first one chooses the learning rates)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def run_task(
    script: str,
    build_task: Callable[[], Task],
    full: ClassificationConfig,
    quick: ClassificationConfig,
    default_out: Path,
    argv: Optional[list[str]] = None,
    figure: Optional[Figure] = None,
) -> int:
    """The whole command: seeds, summaries, ``results.{json,md}``, optional figure; returns the exit code."""
    args = parse_args(script, default_out, argv)
    setup_logging(args.verbose)
    torch.set_num_threads(args.threads)
    cfg = quick if args.quick else full
    if args.seeds:
        cfg = dataclasses.replace(cfg, seeds=tuple(args.seeds))
    args.out = args.out or (quick_out(default_out) if args.quick else default_out)
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", script, *(argv if argv is not None else sys.argv[1:])])
    load_at_start = os.getloadavg()
    start, records, chosen_lrs = time.perf_counter(), [], {}
    task = build_task()
    logger.info("%s: %d transfer inputs, %d test, OOD sets %s; %s", task.name, len(task.transfer_x),
                len(task.test_x), list(task.ood), cfg)
    for i, seed in enumerate(cfg.seeds):
        outcome = run_seed(task, seed, cfg, chosen_lrs)
        records.append(outcome.record)
        if i == 0 and figure is not None:
            figure(task, outcome, args.out)
    wall, cpu = time.perf_counter() - start, cpu_seconds()
    summary = summarise_seeds(records)
    table = results_table(summary, list(task.ood))
    machine = {**machine_info(), "load_average_at_start": load_at_start}
    load = ", ".join(f"{x:.1f}" for x in load_at_start)
    markdown = (f"# {task.name}: recorded results\n\nCommand: `{command}`  \n"
                f"Machine: {machine['cpu_count']} CPUs ({machine['processor']}), torch {machine['torch']}, "
                f"{machine['torch_threads']} thread(s); load average at start {load}.  \nWall time: {wall:.0f} s "
                f"(CPU time: {cpu:.0f} s). "
                f"Seeds: {list(cfg.seeds)} (mean ± sample std over seeds).\n\n{table}")
    (args.out / "results.md").write_text(markdown)
    write_json(args.out / "results.json", {"command": command, "config": dataclasses.asdict(cfg),
                                           "machine": machine, "wall_seconds": wall, "cpu_seconds": cpu,
                                           "summary": summary, "seeds": records})
    logger.info("done in %.0f s; results in %s", wall, args.out)
    print(markdown)
    return 0
