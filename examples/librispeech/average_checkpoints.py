#!/usr/bin/env python3
"""Average the weights of the last N epoch checkpoints of a fairseq run (``checkpoint<EPOCH>.pt``) into one
checkpoint, as fairseq's S2T LibriSpeech recipe does with its ``scripts/average_checkpoints.py`` (which
``pip install fairseq`` does not ship).

Every floating-point tensor of ``model`` is the mean of the N checkpoints' (accumulated in float64, stored in
the checkpoints' dtype); integer tensors and everything else (config, optimizer history) come from the newest
checkpoint. The checkpoints must have the same parameter names and shapes.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import List

import torch

logger = logging.getLogger("average_checkpoints")
EPOCH_CHECKPOINT = re.compile(r"^checkpoint(\d+)\.pt$")


def last_epoch_checkpoints(save_dir: Path, n: int) -> List[Path]:
    """The ``n`` epoch checkpoints of ``save_dir`` with the highest epoch numbers, oldest first (fewer if the
    run has fewer; ValueError if it has none)."""
    found = sorted((int(m.group(1)), p) for p in save_dir.glob("checkpoint*.pt")
                   if (m := EPOCH_CHECKPOINT.match(p.name)))
    if not found:
        raise ValueError(f"{save_dir}: no epoch checkpoints (checkpoint<EPOCH>.pt); train without "
                         f"--no-epoch-checkpoints")
    return [p for _, p in found[-n:]]


def average(paths: List[Path]) -> dict:
    """The newest checkpoint, as stored (torch's safe loader, which the plugin allows fairseq's config objects
    through), with its model weights replaced by the mean over ``paths``."""
    states = [torch.load(p, map_location="cpu") for p in paths]
    newest = states[-1]
    keys = list(newest["model"])
    for i, state in enumerate(states[:-1]):
        if list(state["model"]) != keys:
            raise ValueError(f"{paths[i]} and {paths[-1]} have different parameters")
    averaged = {}
    for key in keys:
        tensor = newest["model"][key]
        if tensor.is_floating_point():
            total = sum(s["model"][key].to(torch.float64) for s in states)
            averaged[key] = (total / len(states)).to(tensor.dtype)
        else:
            averaged[key] = tensor
    newest["model"] = averaged
    return newest


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--save-dir", required=True, type=Path, help="fairseq-train's --save-dir")
    p.add_argument("--last", type=int, default=10, help="number of epoch checkpoints to average")
    p.add_argument("--output", required=True, type=Path, help="the averaged checkpoint to write")
    args = p.parse_args(argv)
    import proxy_end2.plugin  # noqa: F401  (fairseq checkpoints under torch's safe loader; the plugin's models)
    from fairseq import checkpoint_utils

    paths = last_epoch_checkpoints(args.save_dir, args.last)
    checkpoint_utils.torch_persistent_save(average(paths), str(args.output))
    logger.info(f"averaged {len(paths)} checkpoints ({paths[0].name} .. {paths[-1].name}) into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
