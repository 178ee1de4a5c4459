#!/usr/bin/env python
r"""Measurement: the cost per element of the special functions behind the Proxy-Dirichlet loss and the
Prior-Network uncertainty, against evaluating a power series with torch's elementwise operations.

Why: with ``alpha_k = exp(z_k) + 1`` and ``eps_k = exp(z_k)`` small, ``psi``, ``lnGamma`` and ``psi'`` at
``1 + eps`` are power series in ``eps`` (``psi(1 + eps) = -gamma + zeta(2) eps - zeta(3) eps^2 + ...``); this
measures whether evaluating such a series (Horner's rule, in-place torch operations on a float64 tensor)
is cheaper than ``torch.digamma``/``lgamma``/``polygamma(1, .)`` on the same elements, for series of
``--terms`` terms (float64 round-off needs about 14 terms at eps <= 1/16, 6 at eps <= 2^-10), and what
gathering a subset of the elements (``index_select`` of every other element) costs.

Prints nanoseconds per element (the minimum of ``--repeats`` runs over ``--elements`` float64 elements).

    PYTHONPATH=. python benchmarks/special_function_cost.py --threads 1 --json
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time

from common import RESULTS_DIR, device_label, environment, loadavg, write_json


def _ns_per_element(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e9


def horner(eps, terms: int):
    """A ``terms``-term polynomial in ``eps`` by Horner's rule, in place (coefficients immaterial here)."""
    import torch

    acc = torch.full_like(eps, 1.0 / (terms + 1))
    for i in range(terms, 0, -1):
        acc.mul_(eps).add_(1.0 / i)
    return acc


def measure(n: int, repeats: int, terms: list[int], seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    eps = torch.rand(n, generator=g, dtype=torch.float64) / 16
    alpha = eps + 1.0
    rows = {"digamma": _ns_per_element(lambda: torch.digamma(alpha), n, repeats),
            "lgamma": _ns_per_element(lambda: torch.lgamma(alpha), n, repeats),
            "polygamma1": _ns_per_element(lambda: torch.polygamma(1, alpha), n, repeats)}
    for m in terms:
        rows[f"horner_{m}_terms"] = _ns_per_element(lambda: horner(eps, m), n, repeats)
    every_other = torch.arange(0, n, 2)
    rows["index_select_half"] = _ns_per_element(lambda: eps.index_select(0, every_other), n, repeats)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--elements", type=int, default=1 << 22)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--terms", type=int, nargs="+", default=[6, 14])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="write results/special_function_cost/<date>_<device>.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    load_start = loadavg()
    rows = measure(args.elements, args.repeats, args.terms, args.seed)
    load = (load_start, loadavg())
    for name, ns in rows.items():
        print(f"{name:>20}: {ns:7.1f} ns per element")
    print(f"load average {load[0]:.1f} -> {load[1]:.1f}, {args.threads} thread(s)")
    if args.json:
        write_json(RESULTS_DIR / "special_function_cost" / f"{datetime.date.today()}_{device_label('cpu')}.json",
                   {"environment": environment("cpu", ()), "settings": vars(args), "loadavg": load,
                    "ns_per_element": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
