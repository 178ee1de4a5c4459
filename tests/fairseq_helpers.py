"""Build fairseq tasks and models in-process from command-line flags (as fairseq-train would)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from conftest import SRC, TGT, USER_DIR


def build_cfg(data: Path, extra: Sequence[str]):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, [str(data), "--user-dir", USER_DIR, "-s", SRC, "-t", TGT, "--cpu", *map(str, extra)]
    )
    return convert_namespace_to_omegaconf(args)


def build_task_and_model(data: Path, extra: Sequence[str]):
    cfg = build_cfg(data, extra)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return cfg, task, model


def build_s2t_cfg(data: Path, extra: Sequence[str]):
    """As :func:`build_cfg` for fairseq speech-to-text data (no language pair; ``--config-yaml config.yaml``)."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, [str(data), "--user-dir", USER_DIR, "--config-yaml", "config.yaml", "--cpu", *map(str, extra)]
    )
    return convert_namespace_to_omegaconf(args)
