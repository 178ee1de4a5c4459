"""Average the parameters of the last N checkpoints of a fairseq-train run into one checkpoint.

    python average_checkpoints.py --save-dir DIR --last 5 --output teacher1.pt

Takes the N epoch checkpoints ``checkpoint<epoch>.pt`` with the highest epoch numbers (or, if the run saved
``checkpoint_<epoch>_<updates>.pt`` files, the N with the most updates), averages every tensor of their
``model`` state in float64 and stores it in the dtype of the newest one, whose other fields (config, the
training state of that checkpoint) are kept, except the optimizer state, dropped to save space. Loaded with
torch's safe (weights-only) unpickler. The output is written under a temporary name and renamed.
With ``--last 1`` or fewer checkpoints than asked, it says so and averages what there is (at least one).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import List

import torch

from proxy_end2.safe_loading import allow_fairseq_checkpoints

_EPOCH = re.compile(r"^checkpoint(\d+)\.pt$")
_UPDATES = re.compile(r"^checkpoint_(\d+)_(\d+)\.pt$")


def last_checkpoints(save_dir: str, last: int) -> List[Path]:
    """The ``last`` newest checkpoints of ``save_dir`` by update count (``checkpoint_E_U.pt``) if any, else by
    epoch (``checkpoint<E>.pt``), oldest first."""
    files = list(Path(save_dir).iterdir())
    by_updates = sorted((int(m.group(2)), f) for f in files if (m := _UPDATES.match(f.name)))
    by_epoch = sorted((int(m.group(1)), f) for f in files if (m := _EPOCH.match(f.name)))
    chosen = by_updates or by_epoch
    if not chosen:
        raise SystemExit(f"{save_dir}: no checkpoint<epoch>.pt or checkpoint_<epoch>_<updates>.pt to average")
    return [f for _, f in chosen[-last:]]


def average(paths: List[Path]) -> dict:
    sums, newest = None, None
    for path in paths:
        state = torch.load(path, map_location="cpu")  # weights_only (fairseq's Namespace is allowlisted)
        params = state["model"]
        if sums is None:
            sums = {k: v.double().clone() if v.is_floating_point() else v.clone() for k, v in params.items()}
        else:
            if params.keys() != sums.keys():
                raise SystemExit(f"{path}: its parameters differ from those of {paths[0]}")
            for k, v in params.items():
                if v.is_floating_point():
                    sums[k] += v.double()
        newest = state
    newest["model"] = {k: (v / len(paths)).to(newest["model"][k].dtype) if v.is_floating_point() else v
                       for k, v in sums.items()}
    newest["last_optimizer_state"] = None
    return newest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save-dir", required=True, help="fairseq-train's --save-dir")
    parser.add_argument("--last", type=int, required=True, help="how many of the newest checkpoints")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    allow_fairseq_checkpoints()
    paths = last_checkpoints(args.save_dir, max(1, args.last))
    if len(paths) < args.last:
        print(f"average_checkpoints: only {len(paths)} checkpoint(s) in {args.save_dir}, {args.last} asked",
              file=sys.stderr)
    torch.save(average(paths), args.output + ".tmp")
    os.replace(args.output + ".tmp", args.output)
    print(f"average_checkpoints: {args.output} = mean of {', '.join(p.name for p in paths)}", file=sys.stderr)


if __name__ == "__main__":
    main()
