"""One (K, seed) cell of the many-classes experiment: teachers, transfer sets, one student per loss, metrics.

For every loss the learning rate is chosen on the first seed of each K by :mod:`distil_kit.lr_selection`
(the same grid and validation criterion for all losses) and reused for the other seeds; every run has the
same optimiser, step budget, batch size, batches and student initialisation (seeded by the seed).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from distil_kit.assessment import assess_ensemble
from distil_kit.objectives import LOSS_NAMES
from distil_kit.protocol import Splits, run_losses
from distil_kit.reporting import setup_logging
from distil_kit.students import MLPStudent
from distil_kit.training import TrainConfig
from distil_kit.transfer import build_transfer_set
from synthetic_teachers import EnsembleSpec, SyntheticEnsemble, in_domain_inputs, ood_inputs, transfer_inputs

logger = logging.getLogger(__name__)

#: Added to the seed for the input draws (the teachers' weights use the seed itself).
DATA_SEED_OFFSET = 1000
#: Name of the OOD set in the results.
OOD_NAME = "far"


@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes and budgets (defaults: the recorded full run; see ``run_experiment.py --quick``)."""

    num_classes: tuple[int, ...] = (10, 100, 1000, 10000)
    seeds: tuple[int, ...] = (0, 1, 2)
    losses: tuple[str, ...] = LOSS_NAMES
    steps: int = 300
    batch_size: int = 64
    hidden: int = 64
    lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    train_size: int = 4096
    valid_size: int = 256
    test_size: int = 400
    probe_size: int = 128
    probe_fractions: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)

    def spec(self, num_classes: int) -> EnsembleSpec:
        """The teacher ensemble's parameters for ``K = num_classes``."""
        return EnsembleSpec(num_classes=num_classes)

    def probe_steps(self) -> tuple[int, ...]:
        """Steps of the gradient probes (0 = initialisation)."""
        return tuple(sorted({round(f * self.steps) for f in self.probe_fractions}))


def make_splits(spec: EnsembleSpec, seed: int, cfg: ExperimentConfig) -> Splits:
    """Draw the teachers and the inputs of one (K, seed) and run the teachers once on every input."""
    members = SyntheticEnsemble(spec, seed).members()
    gen = torch.Generator().manual_seed(DATA_SEED_OFFSET + seed)
    return Splits(
        train=build_transfer_set(members, transfer_inputs(spec, cfg.train_size, gen)),
        valid=build_transfer_set(members, in_domain_inputs(spec, cfg.valid_size, gen)),
        test=build_transfer_set(members, in_domain_inputs(spec, cfg.test_size, gen)),
        ood={OOD_NAME: build_transfer_set(members, ood_inputs(spec, cfg.test_size, gen))},
    )


def run_cell(k: int, seed: int, cfg: ExperimentConfig, chosen_lrs: dict[int, dict[str, float]]) -> dict:
    """All losses for one (K, seed). ``chosen_lrs[K][loss]`` is filled by the first seed and reused."""
    start = time.perf_counter()
    spec = cfg.spec(k)
    splits = make_splits(spec, seed, cfg)
    logger.info("K=%d seed=%d: teacher statistics ready (%.1f s)", k, seed, time.perf_counter() - start)

    def make_model() -> MLPStudent:
        torch.manual_seed(seed)  # the same initialisation for every loss and learning rate
        return MLPStudent(spec.input_dim, cfg.hidden, k)

    train_cfg = TrainConfig(cfg.steps, cfg.batch_size, cfg.lrs[0], seed, cfg.probe_steps())
    chosen = chosen_lrs.setdefault(k, {})
    runs, _ = run_losses(cfg.losses, make_model, splits, train_cfg, cfg.lrs, chosen, cfg.probe_size)
    return {"num_classes": k, "seed": seed, "ensemble": assess_ensemble(splits.test, splits.ood), "runs": runs,
            "seconds": time.perf_counter() - start}


def run_k(k: int, cfg: ExperimentConfig, threads: int = 1, verbose: bool = False) -> list[dict]:
    """Every seed of one K, in order (the unit of parallel work: learning rates are chosen per K, on the
    first seed). Sets up logging and torch threads, so that it can run in a fresh worker process."""
    setup_logging(verbose)
    torch.set_num_threads(threads)
    chosen_lrs: dict[int, dict[str, float]] = {}
    return [run_cell(k, seed, cfg, chosen_lrs) for seed in cfg.seeds]
