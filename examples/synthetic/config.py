"""The main job's options: one dataclass, from which the command line is generated."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

CRITERIA = ("proxy_dirichlet_distillation", "dirichlet_nll_distillation", "ensemble_kl_distillation")


def option(default, help: str, choices: Optional[Sequence] = None, **kwargs):
    """A dataclass field with its command-line help (and choices)."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class MainJobConfig:
    out: str = option("runs/main_job", "output folder (re-running resumes it)")
    num_teachers: int = option(3, "ensemble members (seeds 100, 101, ...)")
    vocab_size: int = option(1700, "source words of the synthetic language pair")
    ambiguity: float = option(0.2, "fraction of source words with two translations (data uncertainty)")
    train_size: int = option(6000, "training sentence pairs")
    valid_size: int = option(200, "validation sentence pairs")
    test_size: int = option(300, "sentences of each test set (in-domain, rare words, permuted source)")
    teacher_arch: str = option("transformer_tiny", "fairseq architecture of the teachers")
    student_arch: str = option("prior_transformer_tiny", "architecture of the Prior-Network students")
    teacher_epochs: int = option(14, "training epochs of each teacher")
    student_epochs: int = option(12, "distillation epochs of each student")
    max_tokens: int = option(512, "tokens per batch (fairseq --max-tokens)")
    warmup_updates: int = option(100, "inverse_sqrt warm-up updates")
    lr: float = option(0.007, "teachers' peak learning rate")
    student_lr: float = option(0.0015, "students' peak learning rate (they start from a teacher)")
    student_seed: int = option(7, "fairseq --seed of the students (dropout, batch order); a seed other than 7 "
                                  "names their folders <criterion>-seed<N>, so that several seeds share one --out")
    beam: int = option(5, "beam size of every generation")
    nbest: int = option(5, "hypotheses per sentence printed and scored with uncertainty")
    student_targets: str = option(
        "reference", "students learn from the references, or from the ensemble's beam-search translations of "
        "the training sources (sequence-level distillation, the authors' MT recipe)", ("reference", "ensemble"))
    student_init: str = option(
        "teacher1", "students start from the first teacher's weights (fine-tuned into Prior Networks: a few "
        "epochs suffice) or from scratch (then raise --student-epochs a lot)", ("teacher1", "none"))
    teacher_cache: bool = option(False, "the proxy and KL students train from an offline teacher cache built once "
                                        "after the teachers (proxy-end2-teacher-cache), not with the teachers online; "
                                        "their names end in -cache, so they share an --out with the online ones")
    cache_topk: int = option(32, "with --teacher-cache: classes of the ensemble mean kept per target token")
    jobs: int = option(3, "commands run at once: the teachers, the students, the generations")
    threads: int = option(0, "torch threads per command (0: CPU cores // jobs, at least 1)")
    criteria: List[str] = option(list(CRITERIA), "the students' distillation criteria", CRITERIA)
    seed: int = option(1, "seed of the synthetic data")
    cpu: bool = option(False, "run every command on the CPU even when a GPU is present (default: fairseq "
                              "uses the GPU when there is one)")


def build_parser(description: str) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per :class:`MainJobConfig` field (type, default, help, choices)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = MainJobConfig()
    for f in dataclasses.fields(MainJobConfig):
        default = getattr(defaults, f.name)
        kwargs = dict(default=default, help=f"{f.metadata['help']} (default: {default})")
        if f.metadata["choices"] is not None:
            kwargs["choices"] = f.metadata["choices"]
        if isinstance(default, bool):
            kwargs["action"] = "store_true"
        elif isinstance(default, list):
            kwargs.update(nargs="+", type=type(default[0]))
        else:
            kwargs["type"] = type(default)
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


def parse_config(argv: Optional[Sequence[str]], description: str = "") -> MainJobConfig:
    return MainJobConfig(**vars(build_parser(description).parse_args(argv)))
