#!/usr/bin/env python
r"""Benchmark: streamed teacher statistics + analytic-backward Proxy-Dirichlet loss vs. a naive
stacked-logits baseline.

Two ways to turn the logits of ``M`` teachers and the student's logits at ``N = B*T`` target positions
(``K`` classes) into the Proxy-Dirichlet reverse-KL loss and the student's gradient:

``naive``
    The straightforward method, written for this benchmark from the method's equations (it imports nothing
    from ``proxy_end2``): the members' logits are stacked into one ``[N, M, K]`` tensor in the run's dtype
    (the ``sample["ensemble_logits"]`` buffer of a batch), the statistics are computed on it in float32
    (``probs`` and ``logprobs`` ``[N, M, K]``, ``mean_probs``, expected entropy, EPKL, MKL via
    ``F.kl_div``, mutual information, and the target precision ``(K-1)/(2 MKL + eps)`` to which
    ``K * target_offset`` is added in place), then the per-token loss
    ``C = -sum_k pbar_k [psi(a_k+eps) - psi(a_0+eps)] - H[Dir(a)] * (1/(B+eps) + 1e-11)``
    with ``a = exp(z) + 1`` in float64 and plain ``torch.digamma``/``torch.lgamma``, differentiated by
    autograd. ``eps = 2^-23`` and the ``1e-11`` term are the constants of the method's original
    implementation.

``streamed``
    ``proxy_end2``: each member's ``[N, K]`` logits are folded into
    :class:`proxy_end2.uncertainty.EnsembleStatisticsAccumulator` (float32) and dropped, then
    :func:`proxy_end2.losses.proxy_dirichlet_loss_from_stats` (float64 on row chunks, gradient computed in
    the forward pass) gives the loss.

What is timed (wall clock, ``torch.cuda.synchronize()`` around every section on GPU): the statistics, the
loss forward and the backward. NOT timed: producing the teachers' logits. There is no teacher network: each
member's logits are pseudo-random numbers written chunk by chunk (a few MB of temporaries) straight into
their destination, identically for both methods (same values bit for bit): into the stacked buffer for
``naive``, into a fresh ``[N, K]`` tensor per member for ``streamed``. The student's logits are a leaf
tensor ``[N, K]`` (``requires_grad``) in the same dtype; no padding (every position is a target token).

Peak memory, per phase ("stats": allocating the student's logits, writing the teacher logits, statistics;
"loss": loss forward + backward), counts everything the method holds alive at that moment, inputs included
(the stacked buffer or the current member's logits, the student's logits and their gradient):

* GPU: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()`` at the start of each
  phase, minus ``memory_allocated()`` at the start of the repetition (about 0: each repetition starts
  from an empty allocator). Allocated bytes, not reserved by the caching allocator.
* CPU: Linux ``VmHWM`` (peak resident set size) of the worker process, reset at the start of each phase by
  writing ``5`` to ``/proc/self/clear_refs``, minus ``VmRSS`` at the start of the repetition. Every
  (method, configuration) runs in a fresh subprocess. This is resident memory, so it includes allocator
  slack and touched pages only; a buffer allocated but never written would not count (none is here).
  The worker runs under ``RLIMIT_AS`` (``--cpu-mem-limit-gib``) so that an allocation beyond it fails
  with a catchable error, reported as ``OOM``, instead of bringing down the machine. Only meaningful with
  ``--cpu-malloc mmap`` (see :data:`MALLOC_ENV`); with ``--cpu-malloc default`` no memory is recorded.

A run that cannot allocate (CUDA OOM, CPU allocator failure, worker killed by a signal) is reported as
``OOM`` for that method and configuration; the other configurations go on.

Correctness check printed for every configuration: the relative difference between the two methods of the
mean loss, of the gradient's norm and of the gradient's inner product with a fixed pseudo-random tensor.
The two are not the same formula (the naive one has ``eps`` inside digamma/lgamma and the ``1e-11`` term;
the streamed statistics are computed in log space), so agreement is expected to ~1e-6, not to 1e-15;
``--loss-diff-check`` breaks the loss difference down.

Usage (the commands behind the recorded results are in benchmarks/README.md)::

    python benchmarks/teacher_statistics.py --device cpu --vocab 40000 --members 10 --tokens 1024 \
        --dtype fp32 --repeats 2 --json benchmarks/results/teacher_statistics/DATE_DEVICE_CONFIG.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from common import REPO_ROOT, Meter as _Meter, environment, loadavg as _loadavg, portable as _portable

DTYPES = ("fp32", "fp16", "bf16")
METHODS = ("naive", "streamed")
EPS = 2.0**-23  # torch.finfo(torch.float32).eps, the constant of the method's original implementation
MODEL_OFFSET = 1.0  # recipes: --model-offset 1
TARGET_OFFSET = 1.0  # recipes: --target-offset 1
GEN_CHUNK_ROWS = 64  # rows of pseudo-random logits generated at a time (bounded temporaries)
TEACHER_BASE_SCALE = 3.0  # shared part of the members' logits
TEACHER_NOISE_SCALE = 0.5  # per-member part: gives an MKL of order 0.1 nats
STUDENT_SCALE = 2.0
#: package files whose sha256 (first 16 hex digits) is recorded with every result
FINGERPRINTED = ("proxy_end2/losses", "proxy_end2/uncertainty")

#: glibc malloc settings of CPU workers with --cpu-malloc mmap: every block >= 64 KiB is mmap()ed and
#: munmap()ed on free (no dynamic threshold), so freed tensors leave the resident set at once and VmRSS/VmHWM
#: track live memory. With glibc's default, blocks below the dynamic threshold (up to 32 MiB) stay in the heap
#: after free and are reused without showing up in VmHWM again, which makes per-phase RSS peaks meaningless.
#: The fixed threshold turns every such allocation into an mmap with page faults, which slows the CPU down:
#: time CPU runs with --cpu-malloc default instead.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


# ------------------------------------------------------------------------------------------------------
# Inputs and the naive baseline
# ------------------------------------------------------------------------------------------------------
def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _fill(out, seeds: tuple[int, ...], scales: tuple[float, ...]) -> None:
    """``out[N, K] = sum_i scale_i * randn_i`` with one generator seed per (source, row chunk); same values
    for any destination layout. Temporaries: a few ``[GEN_CHUNK_ROWS, K]`` float32 tensors."""
    import torch

    n, k = out.shape
    gen = torch.Generator(device=out.device)
    for start in range(0, n, GEN_CHUNK_ROWS):
        rows = min(GEN_CHUNK_ROWS, n - start)
        acc = None
        for seed, scale in zip(seeds, scales):
            gen.manual_seed(seed * 1_000_003 + start)
            part = torch.randn(rows, k, generator=gen, device=out.device, dtype=torch.float32) * scale
            acc = part if acc is None else acc.add_(part)
        out[start : start + rows].copy_(acc)


def teacher_logits_into(out, member: int, seed: int) -> None:
    """Member ``member``'s logits: shared base + member noise (identical for both methods)."""
    _fill(out, (seed, seed + 1 + member), (TEACHER_BASE_SCALE, TEACHER_NOISE_SCALE))


def student_logits(n: int, k: int, dtype, device, seed: int):
    import torch

    z = torch.empty(n, k, dtype=dtype, device=device)
    _fill(z, (seed + 10_000,), (STUDENT_SCALE,))
    return z.requires_grad_(True)


def naive_statistics(ensemble_logits, eps: float = EPS, target_offset: float = TARGET_OFFSET) -> dict:
    """Ensemble statistics on the stacked ``[N, M, K]`` logits, float32 accumulation (all of them, as a
    criterion that logs them would compute them)."""
    import torch
    import torch.nn.functional as F

    k = ensemble_logits.shape[-1]
    probs = torch.softmax(ensemble_logits, dim=-1, dtype=torch.float32)  # [N, M, K]
    logprobs = torch.log_softmax(ensemble_logits, dim=-1, dtype=torch.float32)  # [N, M, K]
    mean_probs = probs.mean(dim=-2)  # [N, K]
    expected_entropy = -(probs * logprobs).sum(-1).mean(-1)  # [N]
    upper = -(mean_probs * logprobs.mean(dim=-2)).sum(-1)  # [N]
    epkl = upper - expected_entropy  # [N]
    mkl = F.kl_div(logprobs, mean_probs.unsqueeze(-2).expand_as(logprobs), reduction="none").sum(-1).mean(-1)
    mutual_info = -(mean_probs * torch.log(mean_probs)).sum(-1) - expected_entropy  # [N]
    precision = ((k - 1) / (2.0 * mkl + eps)).unsqueeze(-1)  # [N, 1], --target-concentration mkl
    precision += target_offset * k  # in place, as the RKL criterion does
    return {
        "probs": probs,
        "mean_probs": mean_probs,
        "logprobs": logprobs,
        "epkl": epkl,
        "mkl": mkl,
        "mutual_info": mutual_info,
        "precision": precision,
    }


def naive_rkl_loss(z, mean_probs, precision, model_offset: float = MODEL_OFFSET, eps: float = EPS,
                   extra: float = 1e-11):
    """Per-token Proxy-Dirichlet RKL cost ``[N]`` in float64 from the plain formulas, for autograd."""
    import torch

    k = z.shape[-1]
    alphas = torch.exp(z.to(torch.float64)) + model_offset  # [N, K]
    alphas = alphas.clamp(max=torch.finfo(torch.float64).max / k - 1)  # overflow guard of the sum over K
    alpha0 = alphas.sum(-1, keepdim=True)  # [N, 1]
    digamma_gap = torch.digamma(alphas + eps) - torch.digamma(alpha0 + eps)  # [N, K]
    expected_nll = -(mean_probs * digamma_gap).sum(-1)  # [N], float32 pbar promoted to float64
    entropy = (
        torch.lgamma(alphas + eps).sum(-1)
        - torch.lgamma(alpha0 + eps).squeeze(-1)
        - ((alphas - 1.0) * digamma_gap).sum(-1)
    )  # [N], H[Dir(alpha)]
    return expected_nll - entropy * (1.0 / (precision.squeeze(-1) + eps) + extra)  # [N]


# ------------------------------------------------------------------------------------------------------
# Worker side (one method, one configuration, fresh process)
# ------------------------------------------------------------------------------------------------------
def _stats_phase(method: str, n: int, k: int, m: int, dtype, device, seed: int, meter: _Meter, rec: dict,
                 held: dict) -> None:
    """Student's logits, teachers' logits and statistics; what stays alive goes into ``held``."""
    import torch

    from proxy_end2.uncertainty import EnsembleStatisticsAccumulator

    meter.start_phase()
    held["z"] = student_logits(n, k, dtype, device, seed)
    if method == "naive":
        ensemble_logits = torch.empty(n, m, k, dtype=dtype, device=device)  # sample["ensemble_logits"]
        held["ensemble_logits"] = ensemble_logits  # stays with the batch through the backward
        for member in range(m):
            teacher_logits_into(ensemble_logits[:, member], member, seed)
        held["stats"], rec["stats_s"] = meter.timed(lambda: naive_statistics(ensemble_logits))
    else:
        acc = EnsembleStatisticsAccumulator(dtype=torch.float32)
        rec["stats_s"] = 0.0
        for member in range(m):
            logits = torch.empty(n, k, dtype=dtype, device=device)  # what teacher `member` returns
            teacher_logits_into(logits, member, seed)
            _, dt = meter.timed(lambda: acc.add(logits))
            rec["stats_s"] += dt
            del logits
        held["stats"], dt = meter.timed(acc.finalize)
        rec["stats_s"] += dt
        del acc
    rec["peak_stats_bytes"] = meter.phase_peak()


def _loss_phase(method: str, n: int, meter: _Meter, rec: dict, held: dict) -> None:
    """Loss forward (per-token cost, summed, divided by N) and backward."""
    from proxy_end2.losses import proxy_dirichlet_loss_from_stats

    rec["phase"] = "loss"
    meter.start_phase()
    z = held["z"]
    if method == "naive":
        def fwd():
            stats = held["stats"]
            return naive_rkl_loss(z, stats["mean_probs"], stats["precision"]).sum() / n

    else:

        def fwd():
            cost = proxy_dirichlet_loss_from_stats(
                z, held["stats"], model_offset=MODEL_OFFSET, target_offset=TARGET_OFFSET, precision="mkl"
            )
            return cost.sum() / n

    loss, rec["loss_fwd_s"] = meter.timed(fwd)
    if method == "naive":
        # a criterion that computes the statistics from sample["ensemble_logits"] inside its forward drops
        # them when it returns (autograd keeps what it saved); the stacked logits stay with the batch
        del held["stats"]
    # streamed: proxy_end2's task stores the statistics in the sample (TEACHER_STATS_KEY), which lives until
    # train_step returns, so they stay alive through the backward
    _, rec["loss_bwd_s"] = meter.timed(loss.backward)
    rec["peak_loss_bytes"] = meter.phase_peak()
    rec["loss"] = float(loss.detach())


def _gradient_checks(z, n: int, k: int, seed: int, rec: dict) -> None:
    """Norm and inner product with a fixed probe of the student's gradient (untimed, after the memory)."""
    import torch

    grad = z.grad.detach()
    rec["grad_norm"] = float(grad.double().norm())
    probe = torch.empty(n, k, dtype=torch.float32, device=grad.device)
    _fill(probe, (seed + 20_000,), (1.0,))
    rec["grad_dot_probe"] = float((grad.double() * probe.double()).sum())
    rec["grad_finite"] = bool(torch.isfinite(grad).all())


def _is_oom(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        s in msg for s in ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate")
    )


def _one_repeat(method: str, n: int, k: int, m: int, dtype, device, seed: int, meter: _Meter) -> dict:
    rec = {"phase": "stats"}
    held: dict = {}  # what the method holds alive between the phases
    meter.start_repeat()
    try:
        _stats_phase(method, n, k, m, dtype, device, seed, meter, rec, held)
        _loss_phase(method, n, meter, rec, held)
        held.pop("ensemble_logits", None)
        held.pop("stats", None)
        _gradient_checks(held["z"], n, k, seed, rec)
        rec["status"] = "ok"
    except (MemoryError, RuntimeError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if not _is_oom(exc):
            raise
        rec["status"] = "OOM"
        msg = str(exc)
        rec["error"] = msg.splitlines()[0][:300] if msg else type(exc).__name__
    rec["total_s"] = sum(rec.get(key, 0.0) for key in ("stats_s", "loss_fwd_s", "loss_bwd_s"))
    return rec


def worker_main(spec: dict) -> dict:
    import torch

    if spec["device"] == "cpu" and spec.get("cpu_mem_limit_gib"):
        limit = int(spec["cpu_mem_limit_gib"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    import proxy_end2.losses  # noqa: F401  (imported here, not inside a measured phase)
    from proxy_end2.uncertainty import _numerics

    if spec.get("chunk_elements"):
        # experiment only: the row-chunk size of the package's [N, K] passes (statistics and losses alike),
        # a private setting
        _numerics.CHUNK_ELEMENTS = int(spec["chunk_elements"])
    device = torch.device(spec["device"])
    dtype = _torch_dtype(spec["dtype"])
    meter = _Meter(device)
    loadavg_start = _loadavg()
    reps = []
    for i in range(spec["warmup"] + spec["repeats"]):
        rec = _one_repeat(spec["method"], spec["tokens"], spec["vocab"], spec["members"], dtype, device,
                          spec["seed"], meter)
        rec["warmup"] = i < spec["warmup"]
        reps.append(rec)
        if rec["status"] != "ok":
            break
    return {"spec": spec, "repeats": reps, "torch_threads": torch.get_num_threads(),
            "chunk_elements": _numerics.chunk_elements(device), "loadavg_start": loadavg_start,
            "loadavg_end": _loadavg()}


# ------------------------------------------------------------------------------------------------------
# --loss-diff-check: where the naive/streamed loss difference comes from
# ------------------------------------------------------------------------------------------------------
def loss_diff_check(n: int, k: int, m: int, device_name: str) -> dict:
    """The naive loss with and without ``eps`` in digamma/lgamma and the ``1e-11`` term, against proxy_end2
    on the same logits (fp32, seed 0, in this process), and the mean Dirichlet entropy that the ``1e-11``
    multiplies."""
    import torch

    from proxy_end2.losses import proxy_dirichlet_loss_from_stats
    from proxy_end2.uncertainty import EnsembleStatisticsAccumulator

    device = torch.device(device_name)
    buf = torch.empty(n, m, k, device=device)
    for member in range(m):
        teacher_logits_into(buf[:, member], member, 0)
    z = student_logits(n, k, torch.float32, device, 0).detach()
    stats = naive_statistics(buf)
    acc = EnsembleStatisticsAccumulator()
    for member in range(m):
        acc.add(buf[:, member])
    ours = float(proxy_dirichlet_loss_from_stats(z, acc.finalize()).mean())
    variants = []
    for eps, extra in ((EPS, 1e-11), (EPS, 0.0), (0.0, 1e-11), (0.0, 0.0)):
        value = float(naive_rkl_loss(z, stats["mean_probs"], stats["precision"], eps=eps, extra=extra).mean())
        variants.append({"eps": eps, "extra": extra, "naive_mean_loss": value,
                         "rel_diff": abs(value - ours) / abs(ours)})
    alphas = torch.exp(z.double()) + MODEL_OFFSET
    a0 = alphas.sum(-1)
    entropy = (torch.lgamma(alphas).sum(-1) - torch.lgamma(a0)
               - ((alphas - 1) * (torch.digamma(alphas) - torch.digamma(a0).unsqueeze(-1))).sum(-1))
    return {"tokens": n, "vocab": k, "members": m, "dtype": "fp32", "device": device_name,
            "proxy_end2_mean_loss": ours, "naive": variants, "mean_dirichlet_entropy": float(entropy.mean())}


def print_loss_diff(check: dict) -> None:
    print(f"N={check['tokens']} K={check['vocab']} M={check['members']} {check['device']}: "
          f"proxy_end2 mean loss {check['proxy_end2_mean_loss']:.12f}")
    for v in check["naive"]:
        print(f"  naive, eps={v['eps']:.3g} in digamma/lgamma, H*(1/(B+eps) + {v['extra']:g}): "
              f"{v['naive_mean_loss']:.12f}  rel diff {v['rel_diff']:.2e}")
    print(f"  mean H[Dir(alpha)] = {check['mean_dirichlet_entropy']:.6g} "
          "(the 1e-11 term adds -1e-11 * H per token)")


# ------------------------------------------------------------------------------------------------------
# Driver side
# ------------------------------------------------------------------------------------------------------
def _summarise(worker_out: dict | None, failure: str | None) -> dict:
    if worker_out is None:
        return {"status": failure or "error"}
    reps = worker_out["repeats"]
    bad = [r for r in reps if r["status"] != "ok"]
    if bad:
        return {"status": bad[0]["status"], "error": bad[0].get("error"), "phase": bad[0].get("phase"),
                "peak_stats_bytes": bad[0].get("peak_stats_bytes"), "repeats": reps}
    timed = [r for r in reps if not r["warmup"]] or reps
    out = {"status": "ok", "repeats": reps, "torch_threads": worker_out["torch_threads"],
           "chunk_elements": worker_out["chunk_elements"], "loadavg_start": worker_out.get("loadavg_start"),
           "loadavg_end": worker_out.get("loadavg_end")}
    for key in ("stats_s", "loss_fwd_s", "loss_bwd_s", "total_s"):
        out[key + "_median"] = statistics.median(r[key] for r in timed)
        out[key + "_min"] = min(r[key] for r in timed)
    spec = worker_out["spec"]
    if spec["device"] == "cpu" and spec.get("cpu_malloc") == "default":
        # glibc keeps freed blocks below its dynamic mmap threshold: RSS peaks are not meaningful
        out["peak_stats_bytes"] = out["peak_loss_bytes"] = out["peak_bytes"] = None
        out["memory_note"] = "not measured (--cpu-malloc default)"
    else:
        for key in ("peak_stats_bytes", "peak_loss_bytes"):
            out[key] = max(r[key] for r in timed)
        out["peak_bytes"] = max(out["peak_stats_bytes"], out["peak_loss_bytes"])
    for key in ("loss", "grad_norm", "grad_dot_probe", "grad_finite"):
        out[key] = timed[-1][key]
    return out


def run_worker(spec: dict, timeout: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if spec["device"] == "cpu" and spec.get("cpu_malloc") == "mmap":
        env.update(MALLOC_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return _summarise(None, f"timeout after {timeout:.0f} s")
    marker = "@@RESULT@@"
    for line in proc.stdout.splitlines():
        if line.startswith(marker):
            return _summarise(json.loads(line[len(marker):]), None)
    if proc.returncode < 0:
        sig = -proc.returncode
        status = "OOM" if sig == 9 else f"killed by signal {sig}"
        return {"status": status, "error": f"worker killed by signal {sig} (SIGKILL: most likely the OOM killer)"}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    if any(s in "\n".join(tail).lower() for s in ("out of memory", "not enough memory", "can't allocate memory")):
        return {"status": "OOM", "error": tail[-1][:300]}
    return {"status": "error", "error": "\n".join(tail)}


def _rel(a, b):
    if a is None or b is None:
        return None
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _comparison(a: dict, b: dict) -> dict:
    """naive (``a``) against streamed (``b``): ratios (> 1: streamed is faster / smaller) and differences."""
    return {
        "speedup_total": a["total_s_median"] / b["total_s_median"],
        "speedup_stats": a["stats_s_median"] / b["stats_s_median"],
        "speedup_loss_fwd_bwd": (a["loss_fwd_s_median"] + a["loss_bwd_s_median"])
        / (b["loss_fwd_s_median"] + b["loss_bwd_s_median"]),
        "memory_ratio": a["peak_bytes"] / b["peak_bytes"] if a["peak_bytes"] else None,
        "rel_diff_loss": _rel(a["loss"], b["loss"]),
        "rel_diff_grad_norm": _rel(a["grad_norm"], b["grad_norm"]),
        "rel_diff_grad_dot": _rel(a["grad_dot_probe"], b["grad_dot_probe"]),
    }


def _fmt_mem(b):
    return "-" if b is None else f"{b / 2**30:.2f}"


def _fmt_s(s):
    return "-" if s is None else f"{s:.3f}"


def _print_method(row: dict, method: str, r: dict) -> None:
    print(f"{row['tokens']:>6} {row['vocab']:>6} {row['members']:>3} {row['dtype']:>5} {method:>8} "
          f"{r['status']:>7} {_fmt_s(r.get('stats_s_median')):>8} {_fmt_s(r.get('loss_fwd_s_median')):>8} "
          f"{_fmt_s(r.get('loss_bwd_s_median')):>8} {_fmt_s(r.get('total_s_median')):>8} "
          f"{_fmt_mem(r.get('peak_bytes')):>8} {_fmt_mem(r.get('peak_stats_bytes')):>7} "
          f"{_fmt_mem(r.get('peak_loss_bytes')):>7} "
          f"{('-' if r.get('loss') is None else format(r['loss'], '.8g')):>14}")
    if r["status"] == "ok" and method != "naive":
        print(f"{'':>8}  [{method}: row chunks of {r['chunk_elements']} elements]")
    if r["status"] == "ok" and r.get("loadavg_start") is not None and row["device"] == "cpu":
        print(f"{'':>8}  [{method}: load average {r['loadavg_start']:.2f} -> {r['loadavg_end']:.2f} "
              f"on {os.cpu_count()} cores; stats/fwd/bwd min {r['stats_s_min']:.3f}/"
              f"{r['loss_fwd_s_min']:.3f}/{r['loss_bwd_s_min']:.3f} s]")
    if r["status"] not in ("ok", "skipped"):
        print(f"{'':>8}  [{method} {r['status']}"
              + (f" in phase {r['phase']}" if r.get("phase") else "") + f"]: {r.get('error')}")


def print_table(rows: list[dict]) -> None:
    head = (f"{'N':>6} {'K':>6} {'M':>3} {'dtype':>5} {'method':>8} {'status':>7} {'stats_s':>8} {'fwd_s':>8} "
            f"{'bwd_s':>8} {'total_s':>8} {'peakGiB':>8} {'stGiB':>7} {'lossGiB':>7} {'loss':>14}")
    print(head)
    print("-" * len(head))
    for row in rows:
        for method in METHODS:
            _print_method(row, method, row[method])
        c = row.get("comparison", {})
        if c:
            parts = [f"{key}={c[key]:.3g}" for key in ("speedup_total", "memory_ratio") if c.get(key) is not None]
            parts += [f"{key}={c[key]:.2e}" for key in ("rel_diff_loss", "rel_diff_grad_norm", "rel_diff_grad_dot")
                      if c.get(key) is not None]
            print(f"{'':>8}  naive/streamed: " + "  ".join(parts))
    print("(times: median over timed repeats, seconds; peak memory: GiB = 2^30 bytes, max over repeats; "
          "stGiB/lossGiB: peak of the statistics / loss fwd+bwd phase; '-': not measured)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--vocab", type=int, nargs="+", default=[40000], help="K (several values allowed)")
    parser.add_argument("--members", type=int, nargs="+", default=[10], help="M (several values allowed)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096], help="N = B*T (several values allowed)")
    parser.add_argument("--dtype", choices=DTYPES, nargs="+", default=["fp32"],
                        help="dtype of the teachers' and the student's logits (several values allowed)")
    parser.add_argument("--methods", choices=METHODS, nargs="+", default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (same process)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--chunk-elements", type=int, default=0,
                        help="override proxy_end2.uncertainty._numerics.CHUNK_ELEMENTS (the row-chunk size of "
                        "the package's statistics and float64 loss passes) in the streamed worker (0: the "
                        "package's choice by device)")
    parser.add_argument("--cpu-mem-limit-gib", type=float, default=18.0,
                        help="RLIMIT_AS of a CPU worker (virtual memory, so ~1 GiB above the usable RSS)")
    parser.add_argument("--cpu-malloc", choices=("mmap", "default"), default="mmap",
                        help="mmap: CPU workers run with MALLOC_MMAP_THRESHOLD_=65536 so that RSS tracks live "
                        "memory (needed for the CPU peak-memory numbers); default: glibc's own (for timing "
                        "only: its RSS peaks are not meaningful)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker before giving up")
    parser.add_argument("--json", type=Path, default=None, help="write all results (and raw repeats) here")
    parser.add_argument("--loss-diff-check", action="store_true",
                        help="only decompose the naive/streamed loss difference at the first --tokens value "
                        "(capped at 256), first --vocab and --members, in this process (--json: write it)")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    return parser


def run_grid(args) -> list[dict]:
    """One fresh worker per (configuration, method); the comparison when both methods ran."""
    rows = []
    for k in args.vocab:
        for m in args.members:
            for dtype in args.dtype:
                for n in args.tokens:
                    row = {"tokens": n, "vocab": k, "members": m, "dtype": dtype, "device": args.device}
                    for method in METHODS:
                        if method not in args.methods:
                            row[method] = {"status": "skipped"}
                            continue
                        spec = {"method": method, "device": args.device, "tokens": n, "vocab": k, "members": m,
                                "dtype": dtype, "repeats": args.repeats, "warmup": args.warmup,
                                "seed": args.seed, "threads": args.threads,
                                "chunk_elements": args.chunk_elements if method != "naive" else 0,
                                "cpu_mem_limit_gib": args.cpu_mem_limit_gib, "cpu_malloc": args.cpu_malloc}
                        t0 = time.perf_counter()
                        row[method] = run_worker(spec, args.timeout)
                        row[method]["worker_wall_s"] = time.perf_counter() - t0
                        print(f"  N={n} K={k} M={m} {dtype} {method}: {row[method]['status']} "
                              f"(worker {row[method]['worker_wall_s']:.1f} s)", flush=True)
                    if row["naive"]["status"] == "ok" and row["streamed"]["status"] == "ok":
                        row["comparison"] = _comparison(row["naive"], row["streamed"])
                    rows.append(row)
    return rows


def write_json(path: Path, env: dict, args, results) -> None:
    settings = {k: (_portable(str(v)) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"}
    payload = {"environment": env, "settings": settings,
               "constants": {"eps": EPS, "model_offset": MODEL_OFFSET, "target_offset": TARGET_OFFSET,
                             "teacher_base_scale": TEACHER_BASE_SCALE,
                             "teacher_noise_scale": TEACHER_NOISE_SCALE, "student_scale": STUDENT_SCALE},
               "results": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {_portable(str(path.resolve()))}")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        try:
            out = worker_main(json.loads(args.worker))
        except Exception:  # reported by the driver as "error"
            traceback.print_exc()
            return 1
        print("@@RESULT@@" + json.dumps(out), flush=True)
        return 0

    import torch

    if str(REPO_ROOT) not in sys.path:  # the driver imports this repository's package too (--loss-diff-check)
        sys.path.insert(0, str(REPO_ROOT))
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    env = environment(args.device, FINGERPRINTED)
    if args.loss_diff_check:
        check = loss_diff_check(min(args.tokens[0], 256), args.vocab[0], args.members[0], args.device)
        print_loss_diff(check)
        results = [check]
    else:
        print(f"device={args.device} " + " ".join(f"{k}={env[k]}" for k in ("cpu", "gpu", "torch") if k in env)
              + f" cpu_count={env['cpu_count']}", flush=True)
        results = run_grid(args)
        print()
        print_table(results)
    if args.json is not None:
        write_json(args.json, env, args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
