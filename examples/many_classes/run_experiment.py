#!/usr/bin/env python
"""Many-classes experiment: Proxy-EnD^2 vs EnD^2 vs EnD as the number of classes K grows.

    python examples/many_classes/run_experiment.py                 # full run (K = 10 .. 10^4, 3 seeds)
    python examples/many_classes/run_experiment.py --quick          # reduced run (tests), into runs/examples/

Writes ``results.json`` (configuration, machine, every run's raw numbers, seed summaries), ``results.md``
(the tables) and ``many_classes.png`` into ``--out``. Progress goes to the log (stderr); the tables are
printed to stdout at the end. See README.md in this folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parents[1]), str(_HERE)]  # the repository's proxy_end2, and this folder's modules

from distil_kit.reporting import setup_logging  # noqa: E402

setup_logging()  # first: fairseq (imported by proxy_end2) would set the root logger to DEBUG

import torch  # noqa: E402

from distil_kit.reporting import cpu_seconds, machine_info, write_json  # noqa: E402
from experiment import ExperimentConfig, run_k  # noqa: E402
from plots import plot_summary  # noqa: E402
from summary import ensemble_table, gradient_table, main_table, summarise_cells  # noqa: E402

logger = logging.getLogger("many_classes")

#: The reduced configuration of ``--quick`` (tests, smoke runs).
QUICK = ExperimentConfig(
    num_classes=(10, 100), seeds=(0,), steps=50, train_size=384, valid_size=96, test_size=120,
    probe_size=48, lrs=(3e-3, 1e-2),
)
DEFAULT_OUT = _HERE / "results"
#: Default output of --quick (ignored by git), so that a smoke run never overwrites the recorded results.
QUICK_OUT = _HERE.parents[1] / "runs" / "examples" / "many_classes_quick"
FIGURE_NAME = "many_classes.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes (K = 10, 100; 1 seed; 50 steps)")
    p.add_argument("--out", type=Path, help=f"output folder (default {DEFAULT_OUT}; with --quick {QUICK_OUT})")
    p.add_argument("--ks", type=int, nargs="+", help="numbers of classes K")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (the first one chooses the learning rates)")
    p.add_argument("--steps", type=int, help="Adam updates per student")
    p.add_argument("--lrs", type=float, nargs="+", help="learning-rate grid")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1: fastest here)")
    p.add_argument("--jobs", type=int,
                   help="processes, each running all seeds of one K (default: 2, or 1 on a 1-CPU machine or "
                        "with --quick, where starting a process costs more than it saves)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The default (or ``--quick``) configuration with the command-line overrides."""
    cfg = QUICK if args.quick else ExperimentConfig()
    overrides = {"num_classes": args.ks, "seeds": args.seeds, "steps": args.steps, "lrs": args.lrs}
    return dataclasses.replace(cfg, **{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in overrides.items() if v is not None})


def render(cfg: ExperimentConfig, summary: dict, command: str, wall: float, cpu: float, machine: dict) -> str:
    """The Markdown of ``results.md``."""
    steps = cfg.probe_steps()
    load = ", ".join(f"{x:.1f}" for x in machine["load_average_at_start"])
    return (
        f"# Many-classes experiment: recorded results\n\nCommand: `{command}`  \n"
        f"Machine: {machine['cpu_count']} CPUs ({machine['processor']}), torch {machine['torch']}, "
        f"{machine['jobs']} process(es) x {machine['torch_threads']} thread(s); load average at start {load}.  \n"
        f"Wall time: {wall:.0f} s (CPU time of all processes: {cpu:.0f} s). "
        f"Seeds: {list(cfg.seeds)} (mean ± sample std over seeds). "
        f"Steps: {cfg.steps}, batch {cfg.batch_size}, hidden {cfg.hidden}, lr grid {list(cfg.lrs)}.\n\n"
        f"## Students vs the ensemble (in-domain test set; OOD = far inputs)\n\n{main_table(summary)}\n"
        f"## Share of the squared logit-gradient norm on the ensemble's top classes\n\n"
        f"{gradient_table(summary, steps)}\n## The teachers\n\n{ensemble_table(summary)}"
    )


def run_all(cfg: ExperimentConfig, jobs: int, threads: int, verbose: bool) -> list[dict]:
    """Every (K, seed) cell, ordered by K then seed. With ``jobs > 1`` each K runs in a worker process
    (largest K first); the numbers do not depend on ``jobs`` (every cell is seeded)."""
    if jobs <= 1:
        return [cell for k in cfg.num_classes for cell in run_k(k, cfg, threads, verbose)]
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = {k: pool.submit(run_k, k, cfg, threads, verbose) for k in sorted(cfg.num_classes, reverse=True)}
        return [cell for k in cfg.num_classes for cell in futures[k].result()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    args.out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    args.jobs = args.jobs or (1 if args.quick else min(2, os.cpu_count() or 1))
    args.out.mkdir(parents=True, exist_ok=True)
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python", "examples/many_classes/run_experiment.py", *given])
    logger.info("configuration: %s; %d process(es)", cfg, args.jobs)
    load_at_start = os.getloadavg()
    start = time.perf_counter()
    cells = run_all(cfg, args.jobs, args.threads, args.verbose)
    wall, cpu = time.perf_counter() - start, cpu_seconds()
    summary = summarise_cells(cells)
    plot_summary(summary, cfg.probe_steps(), args.out / FIGURE_NAME)
    machine = {**machine_info(), "jobs": args.jobs, "load_average_at_start": load_at_start}
    markdown = render(cfg, summary, command, wall, cpu, machine)
    (args.out / "results.md").write_text(markdown)
    write_json(args.out / "results.json", {"command": command, "config": dataclasses.asdict(cfg),
                                           "machine": machine, "wall_seconds": wall, "cpu_seconds": cpu,
                                           "summary": summary, "cells": cells})
    logger.info("done in %.0f s; results in %s", wall, args.out)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
