"""Helpers of the scale-out and reliability tests: run fairseq-train through the instrumented driver
(``fairseq_driver.py``) and read its per-update log records and checkpoints."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import torch

from conftest import SRC, TGT, USER_DIR

DRIVER = Path(__file__).with_name("fairseq_driver.py")
TIMEOUT_S = 900  # generous: the CI machine may be loaded; no test asserts on wall-clock time


def driver_command(args: Sequence) -> List[str]:
    return [sys.executable, str(DRIVER), *map(str, args)]


def driver_env(**extra) -> dict:
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_driver(args: Sequence, log_path: Path, expect_rc=0, **env_extra) -> str:
    """Run fairseq-train through the driver; return its output; fail with the log tail unless the exit code is
    ``expect_rc`` (None: any)."""
    proc = subprocess.run(driver_command(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=driver_env(**env_extra), timeout=TIMEOUT_S)
    log_path.write_text(proc.stdout)
    if expect_rc is not None and proc.returncode != expect_rc:
        raise AssertionError(f"fairseq-train exited with {proc.returncode}, expected {expect_rc}; log {log_path}:\n"
                             f"{proc.stdout[-4000:]}")
    return proc.stdout


def distil_args(data: Path, teachers: Sequence[Path], save_dir: Path, *extra) -> List:
    """A short distillation run: tiny Prior-Network student, two teachers, JSON logs of every update."""
    return [
        data, "--user-dir", USER_DIR, "--task", "translation_distillation", "-s", SRC, "-t", TGT,
        "--teacher-paths", ":".join(map(str, teachers)), "--arch", "prior_transformer_tiny",
        "--criterion", "proxy_dirichlet_distillation", "--max-tokens", "256", "--save-dir", save_dir,
        "--num-workers", "0", "--cpu", "--log-format", "json", "--log-interval", "1", "--no-epoch-checkpoints",
        "--disable-validation", *extra,
    ]


def update_records(*logs: str) -> Dict[int, dict]:
    """fairseq's per-update JSON records (``train_inner``, --log-interval 1) by update number; a later log's
    record of the same update (redone after a resume) replaces the earlier one."""
    records: Dict[int, dict] = {}
    for log in logs:
        for line in log.splitlines():
            if "| train_inner |" in line:
                record = json.loads(line[line.index("{"):])
                records[int(record["num_updates"])] = record
    return records


def model_state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def num_updates(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["optimizer_history"][-1]["num_updates"]


def max_abs_difference(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reports(prefix: Path, rank: int) -> List[dict]:
    """The driver's per-update reports of one rank (DRIVER_REPORT)."""
    path = Path(f"{prefix}.rank{rank}.json")
    assert path.exists(), f"rank {rank} wrote no report"
    return [json.loads(line) for line in path.read_text().splitlines()]


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="needs a CUDA GPU (fairseq's --fp16 optimizer and NCCL); none here")
