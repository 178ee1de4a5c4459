#!/usr/bin/env python
"""Transient memory of the full-size MKL computation of :class:`proxy_end2.uncertainty.EnsembleStatistics`.

``stats.mkl()`` (called by ``proxy_target_precision``, hence by ``proxy_dirichlet_loss_from_stats``, and again
by the criterion's logging) worked on whole ``[N, K]`` tensors until the fixes; it now works on row chunks and
caches its result on the statistics. This prints the peak resident memory of each call above what is live
before it, in units of one ``[N, K]`` float32 tensor: first on fresh statistics (no cache; each measurement
gets its own ``EnsembleStatistics`` object over the same tensors), then a second call on the same object.

Run it with glibc's mmap threshold fixed, so that freed tensors leave the resident set at once::

    MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0 PYTHONPATH=. python benchmarks/mkl_transient_memory.py

Linux only (``/proc/self/status``, ``/proc/self/clear_refs``), CPU.
"""
from __future__ import annotations

import argparse
import re

import torch

from proxy_end2.uncertainty import EnsembleStatistics, EnsembleStatisticsAccumulator
from proxy_end2.uncertainty.proxy import proxy_target_precision


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=40000)
    parser.add_argument("--members", type=int, default=3)
    args = parser.parse_args()
    n, k = args.tokens, args.vocab
    unit = n * k * 4
    gen = torch.Generator().manual_seed(0)
    acc = EnsembleStatisticsAccumulator()
    for _ in range(args.members):
        acc.add(torch.randn(n, k, generator=gen))
    stats = acc.finalize()
    del acc
    def fresh():
        return EnsembleStatistics(stats.log_mean_probs, stats.mean_log_probs, stats.expected_entropy, stats.num_members)

    cached = fresh()
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
        print(f"{name}: transient peak above live = {(peak - base) * 1024 / unit:.2f} x [N,K] fp32 "
              f"(N={n}, K={k})")
        del out


if __name__ == "__main__":
    main()
