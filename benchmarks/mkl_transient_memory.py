#!/usr/bin/env python
"""Transient memory of the MKL computation of :class:`proxy_end2.uncertainty.EnsembleStatistics`.

``stats.mkl()`` is called by ``proxy_target_precision`` (hence by ``proxy_dirichlet_loss_from_stats``) and
by the criterion's logging; it works on row chunks and caches its result on the statistics. This prints the
peak resident memory of each call above what is live before it, in units of one ``[N, K]`` float32 tensor:
first on fresh statistics (no cache; each measurement gets its own ``EnsembleStatistics`` object over the
same tensors), then a first and a second call on one object (the second is served from the cache).

The statistics are those of ``--members`` members with standard normal logits (seed 0). The peak is
Linux ``VmHWM`` after resetting it to ``VmRSS`` (``/proc/self/clear_refs``), so run it with glibc's mmap
threshold fixed, so that freed tensors leave the resident set at once::

    MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0 PYTHONPATH=. python benchmarks/mkl_transient_memory.py

Linux only (``/proc/self/status``, ``/proc/self/clear_refs``), CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
from pathlib import Path

import torch

from proxy_end2.uncertainty import EnsembleStatistics, EnsembleStatisticsAccumulator
from proxy_end2.uncertainty.proxy import proxy_target_precision


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def _statistics(n: int, k: int, members: int) -> EnsembleStatistics:
    gen = torch.Generator().manual_seed(0)
    acc = EnsembleStatisticsAccumulator()
    for _ in range(members):
        acc.add(torch.randn(n, k, generator=gen))
    return acc.finalize()


def measure(n: int, k: int, members: int) -> list[dict]:
    """Transient peak of each call, in ``[N, K]`` float32 units (rounded to 2 decimals, as printed)."""
    unit = n * k * 4
    stats = _statistics(n, k, members)

    def fresh():
        return EnsembleStatistics(stats.log_mean_probs, stats.mean_log_probs, stats.expected_entropy,
                                  stats.num_members)

    cached = fresh()
    rows = []
    for name, fn in (
        ("stats.mkl()", fresh().mkl),
        ("proxy_target_precision(stats)", lambda: proxy_target_precision(fresh())),
        ("stats.uncertainty()", fresh().uncertainty),
        ("stats.mkl(), first call", cached.mkl),
        ("stats.mkl(), second call (cached)", cached.mkl),
    ):
        base = _kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        out = fn()
        peak = _kb("VmHWM")
        rows.append({"call": name, "transient_peak_nk_fp32": round((peak - base) * 1024 / unit, 2)})
        print(f"{name}: transient peak above live = {rows[-1]['transient_peak_nk_fp32']:.2f} x [N,K] fp32 "
              f"(N={n}, K={k})")
        del out
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=40000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    rows = measure(args.tokens, args.vocab, args.members)
    if args.json is not None:
        payload = {
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "cpu_count": os.cpu_count(),
                            "malloc_env": {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_",
                                                                          "MALLOC_TRIM_THRESHOLD_")}},
            "settings": {"tokens": args.tokens, "vocab": args.vocab, "members": args.members},
            "unit": "one [N, K] float32 tensor (N * K * 4 bytes)",
            "results": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
