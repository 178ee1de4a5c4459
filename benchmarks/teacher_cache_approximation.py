#!/usr/bin/env python
r"""Measurement: how far the losses trained from an offline teacher cache are from the exact online losses.

The cache (``proxy-end2-teacher-cache``) keeps, per target token, the top ``k`` classes of the ensemble mean
:math:`\bar p`, the tail mass :math:`\tau` outside them and the exact MKL/EPKL/expected entropy; the losses read
the mean as :math:`\tilde p` (the top-k, the tail spread evenly over the other ``K - k`` classes,
:mod:`proxy_end2.uncertainty.topk`). The proxy precision is exact; only the target's tail changes. For each
(teacher profile, student state, ``K``, ``k``) this script computes, at ``N`` positions, in float64:

* the exact online loss :math:`C(z; \bar p)` and its gradient (``proxy_dirichlet_loss_from_stats`` /
  ``ensemble_kl_loss_from_stats`` on :class:`~proxy_end2.uncertainty.EnsembleStatistics`);
* the cached loss :math:`C(z; \tilde p)` and its gradient (the same functions on
  :func:`~proxy_end2.uncertainty.topk_statistics` of the same statistics);
* ``loss_abs``: :math:`|\overline{C}_{cache} - \overline{C}_{exact}|` (nats per token); ``loss_rel``: :math:`|\overline{C}_{cache} - \overline{C}_{exact}| / |\overline{C}_{exact}|` of the mean
  loss over the N positions; ``loss_tok_rel_median``/``_max``: the same per position;
* ``grad_rel``: :math:`\|g_{cache} - g_{exact}\|_2 / \|g_{exact}\|_2` over all ``N x K`` gradient entries;
  ``grad_cos``: their cosine; ``tail``: the mean tail mass :math:`\tau`.

Teachers (``M`` members, logits ``shared + 0.5 * noise_m``, standard normal noise):

* ``randn``: ``shared = 3 * randn`` (the generator of ``teacher_statistics.py``): a flat, heavy tail, the
  top-128 of 40k classes hold little of the mass; a pessimistic case.
* ``zipf``: ``shared_c = -1.5 * ln(rank_c)`` over a random ranking of the classes (a Zipf-like word
  distribution, exponent 1.5): most of the mass in a few classes, as for a trained MT model.

Students: ``near``, a student close to its proxy target (``z = ln(B * pbar) + 0.5 * randn``, ``B`` the
ensemble's proxy precision), and ``random`` (``z = 2 * randn``), early in training.

Usage (the recorded command is in benchmarks/README.md)::

    PYTHONPATH=. python benchmarks/teacher_cache_approximation.py --json
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time

from common import RESULTS_DIR, REPO_ROOT, device_label, environment, loadavg, write_json

PROFILES = ("randn", "zipf")
STUDENTS = ("near", "random")
LOSSES = ("proxy", "kl")
NOISE_SCALE = 0.5
RANDN_SCALE = 3.0
ZIPF_EXPONENT = 1.5


def teacher_logits(profile: str, n: int, k: int, m: int, seed: int):
    """``[N, M, K]`` float64 teacher logits of ``profile`` (module docstring)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if profile == "randn":
        shared = RANDN_SCALE * torch.randn(n, k, generator=g, dtype=torch.float64)
    else:
        ranks = torch.argsort(torch.rand(n, k, generator=g), dim=-1).to(torch.float64) + 1.0  # [N, K], 1..K
        shared = -ZIPF_EXPONENT * ranks.log()
    return torch.stack([shared + NOISE_SCALE * torch.randn(n, k, generator=g, dtype=torch.float64)
                        for _ in range(m)], dim=-2)


def student_logits(state: str, stats, seed: int):
    """``[N, K]`` float64 student logits (module docstring), a leaf that requires grad."""
    import torch

    from proxy_end2.uncertainty import proxy_target_precision

    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(stats.log_mean_probs.shape, generator=g, dtype=torch.float64)
    if state == "random":
        return (2.0 * noise).requires_grad_(True)
    log_b = proxy_target_precision(stats).to(torch.float64).log().unsqueeze(-1)  # [N, 1]
    return (stats.log_mean_probs.to(torch.float64) + log_b + NOISE_SCALE * noise).requires_grad_(True)


def _value_and_grad(loss_fn, z, stats):
    import torch

    value = loss_fn(z, stats)  # [N]
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def compare(loss_fn, z, stats, k: int) -> dict:
    """The measures of the module docstring for one loss, one student and one ``k``."""
    from proxy_end2.uncertainty import topk_statistics

    top = topk_statistics(stats, k)
    exact, g_exact = _value_and_grad(loss_fn, z, stats)
    start = time.perf_counter()
    cached, g_cached = _value_and_grad(loss_fn, z, top)
    seconds = time.perf_counter() - start
    tok_rel = (cached - exact).abs() / exact.abs().clamp(min=1e-300)
    return {
        "loss_exact": exact.mean().item(), "loss_cache": cached.mean().item(),
        "loss_abs": abs(cached.mean().item() - exact.mean().item()),
        "loss_rel": abs(cached.mean().item() - exact.mean().item()) / abs(exact.mean().item()),
        "loss_tok_rel_median": tok_rel.median().item(), "loss_tok_rel_max": tok_rel.max().item(),
        "grad_rel": ((g_cached - g_exact).norm() / g_exact.norm()).item(),
        "grad_cos": ((g_cached * g_exact).sum() / (g_cached.norm() * g_exact.norm())).item(),
        "tail": top.tail_log_mass.exp().mean().item(), "cache_loss_seconds": seconds,
    }


def run(args) -> list[dict]:
    from proxy_end2.losses import ensemble_kl_loss_from_stats, proxy_dirichlet_loss_from_stats
    from proxy_end2.uncertainty import ensemble_statistics

    loss_fns = {"proxy": proxy_dirichlet_loss_from_stats, "kl": ensemble_kl_loss_from_stats}
    rows = []
    for profile in args.profiles:
        for k in args.topk:
            for vocab in sorted({2 * k if v == "2k" else int(v) for v in args.vocab}):
                stats = ensemble_statistics(teacher_logits(profile, args.tokens, vocab, args.members, args.seed))
                for state in args.students:
                    z = student_logits(state, stats, args.seed)
                    for loss in args.losses:
                        row = {"profile": profile, "student": state, "vocab": vocab, "topk": k, "loss": loss,
                               "members": args.members, "tokens": args.tokens, "loadavg": loadavg()}
                        row.update(compare(loss_fns[loss], z, stats, k))
                        print(f"{profile:>5} {state:>6} K={vocab:>6} k={k:>3} {loss:>5}: tail {row['tail']:.3f} "
                              f"loss_rel {row['loss_rel']:.2e} tok_median {row['loss_tok_rel_median']:.2e} "
                              f"grad_rel {row['grad_rel']:.2e} cos {row['grad_cos']:.6f}", flush=True)
                        rows.append(row)
                del stats
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as one markdown table (RESULTS.md and the README quote it)."""
    out = ["| teachers | student | K | k | loss | mean tail mass | mean loss (exact) | abs. err. mean loss | rel. err. mean loss | median rel. err. per "
           "token | rel. err. gradient (L2) | cosine |", "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['profile']} | {r['student']} | {r['vocab']} | {r['topk']} | {r['loss']} | {r['tail']:.3f} | "
                   f"{r['loss_exact']:.4g} | {r['loss_abs']:.2e} | {r['loss_rel']:.2e} | {r['loss_tok_rel_median']:.2e} | {r['grad_rel']:.2e} | "
                   f"{r['grad_cos']:.6f} |")
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--topk", type=int, nargs="+", default=[8, 32, 128], help="classes kept per token")
    p.add_argument("--vocab", nargs="+", default=["2k", "40000"], help="K: numbers, or 2k for twice the top-k")
    p.add_argument("--members", type=int, default=3, help="M, teachers")
    p.add_argument("--tokens", type=int, default=256, help="N, target positions")
    p.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    p.add_argument("--students", nargs="+", choices=STUDENTS, default=list(STUDENTS))
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", nargs="?", const="auto", default=None,
                   help="write the rows to this file (default with no value: results/teacher_cache_approximation/"
                        "<date>_<device>_n<N>_m<M>.json)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    rows = run(args)
    print(markdown(rows))
    if args.json is not None:
        from pathlib import Path

        path = (RESULTS_DIR / "teacher_cache_approximation" /
                f"{datetime.date.today()}_{device_label('cpu')}_n{args.tokens}_m{args.members}.json"
                if args.json == "auto" else Path(args.json))
        write_json(path, {"environment": environment("cpu", ("proxy_end2/losses", "proxy_end2/uncertainty")),
                          "settings": vars(args), "constants": {"noise_scale": NOISE_SCALE, "randn_scale": RANDN_SCALE,
                                                                "zipf_exponent": ZIPF_EXPONENT}, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
