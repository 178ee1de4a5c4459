#!/usr/bin/env python
"""Many-classes experiment: Proxy-EnD^2 vs EnD^2 vs EnD as the number of classes K grows.

    python examples/many_classes/run_experiment.py                 # full run (K = 10 .. 10^4, 3 seeds)
    python examples/many_classes/run_experiment.py --quick --out /tmp/mc   # reduced run (tests)

Writes ``results.json`` (configuration, machine, every run's raw numbers, seed summaries), ``results.md``
(the tables) and ``many_classes.png`` into ``--out``. Progress goes to the log (stderr); the tables are
printed to stdout at the end. See README.md in this folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parents[1]), str(_HERE)]  # the repository's proxy_end2, and this folder's modules

from distil_kit.reporting import setup_logging  # noqa: E402

setup_logging()  # first: fairseq (imported by proxy_end2) would set the root logger to DEBUG

import torch  # noqa: E402

from distil_kit.reporting import machine_info, write_json  # noqa: E402
from experiment import ExperimentConfig, run_cell  # noqa: E402
from plots import plot_summary  # noqa: E402
from summary import ensemble_table, gradient_table, main_table, summarise_cells  # noqa: E402

logger = logging.getLogger("many_classes")

#: The reduced configuration of ``--quick`` (tests, smoke runs).
QUICK = ExperimentConfig(
    num_classes=(10, 100), seeds=(0,), steps=60, train_size=512, valid_size=128, test_size=200,
    probe_size=64, lrs=(3e-3, 1e-2),
)
DEFAULT_OUT = _HERE / "results"
FIGURE_NAME = "many_classes.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes (K = 10, 100; 1 seed; 60 steps)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--ks", type=int, nargs="+", help="numbers of classes K")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (the first one chooses the learning rates)")
    p.add_argument("--steps", type=int, help="Adam updates per student")
    p.add_argument("--lrs", type=float, nargs="+", help="learning-rate grid")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for these sizes)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The default (or ``--quick``) configuration with the command-line overrides."""
    cfg = QUICK if args.quick else ExperimentConfig()
    overrides = {"num_classes": args.ks, "seeds": args.seeds, "steps": args.steps, "lrs": args.lrs}
    return dataclasses.replace(cfg, **{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in overrides.items() if v is not None})


def render(cfg: ExperimentConfig, summary: dict, command: str, wall: float) -> str:
    """The Markdown of ``results.md``."""
    steps = cfg.probe_steps()
    return (
        f"# Many-classes experiment: recorded results\n\nCommand: `{command}`  \n"
        f"Wall time: {wall:.0f} s. Seeds: {list(cfg.seeds)} (mean ± sample std over seeds). "
        f"Steps: {cfg.steps}, batch {cfg.batch_size}, hidden {cfg.hidden}, lr grid {list(cfg.lrs)}.\n\n"
        f"## Students vs the ensemble (in-domain test set; OOD = far inputs)\n\n{main_table(summary)}\n"
        f"## Share of the squared logit-gradient norm on the ensemble's top classes\n\n"
        f"{gradient_table(summary, steps)}\n## The teachers\n\n{ensemble_table(summary)}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "examples/many_classes/run_experiment.py", *(argv if argv is not None else sys.argv[1:])])
    logger.info("configuration: %s", cfg)
    start, cells, chosen_lrs = time.perf_counter(), [], {}
    for k in cfg.num_classes:
        for seed in cfg.seeds:
            cells.append(run_cell(k, seed, cfg, chosen_lrs))
    wall = time.perf_counter() - start
    summary = summarise_cells(cells)
    plot_summary(summary, cfg.probe_steps(), args.out / FIGURE_NAME)
    markdown = render(cfg, summary, command, wall)
    (args.out / "results.md").write_text(markdown)
    write_json(args.out / "results.json", {"command": command, "config": dataclasses.asdict(cfg),
                                           "machine": machine_info(), "wall_seconds": wall,
                                           "summary": summary, "cells": cells})
    logger.info("done in %.0f s; results in %s", wall, args.out)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
