#!/usr/bin/env python
r"""One command for the end-to-end benchmarks of issue #12; writes ``benchmarks/RESULTS.md`` and JSON data under
``benchmarks/results/<benchmark>/<date>_<device>_<config>.json``.

Sections (each configuration in a fresh worker process; CUDA when present, else CPU):

* ``step``: one training step of a ``prior_transformer_tiny`` student (forward, loss, backward, Adam step) on a
  batch of ``--sentences`` x ``--length`` target tokens, for every ``K`` (``--vocab``) and ``M`` (``--members``
  randomly initialised ``transformer_tiny`` fp32 teachers): *plain* (cross-entropy on the targets), *online*
  (teachers + streamed statistics + Proxy-Dirichlet loss, as ``proxy_dirichlet_distillation`` trains), *cache*
  (the same loss from the top-``--topk`` statistics a teacher cache stores; the rows are prepared outside the
  timed step, as the cache's collater reads them) and *naive* (the teachers' logits stacked into one
  ``[B, T, M, K]`` tensor, statistics and loss from the plain formulas of ``teacher_statistics.py``: the
  baseline, benchmark only). Median seconds over ``--repeats`` after one warm-up (the methods interleaved, so
  that a change of the machine's load affects them alike), broken down into teachers +
  statistics, student forward, loss forward, backward + optimizer: the profile. Peak memory: a second worker
  per configuration with glibc's mmap threshold fixed (one repetition), stats phase (teachers + statistics)
  and whole step, above the memory live before the step (``common.Meter``).
* ``generation``: sentences/s of beam search (``--beam``, output length ``--gen-length`` tokens: random models
  never choose EOS early, so every variant produces the same lengths) for the student with uncertainty
  (``UncertaintySequenceGenerator``: beam search + the re-scoring pass), the student without (fairseq's
  ``SequenceGenerator``) and the ``M``-member ensemble with uncertainty.
* ``cache_build``: the per-batch work of ``proxy-end2-teacher-cache`` (teachers, statistics, top-k, writing the
  shard files with ``CacheShardWriter``) on random batches: seconds and MiB per million target tokens (data
  loading not included).
* ``rescoring``: ``rescoring_memory.py``'s rows (peak memory of the re-scoring pass on ragged hypotheses).
* ``approximation``: ``teacher_cache_approximation.py``'s table (cached vs exact loss and gradient).

Usage::

    PYTHONPATH=. python benchmarks/run.py --quick      # a few minutes on a CPU
    PYTHONPATH=. python benchmarks/run.py              # the full grid (M in 1 3 5 10, K in 1k 8k 40k)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import MALLOC_ENV, REPO_ROOT, RESULTS_DIR, Meter, device_label, environment, loadavg, portable, write_json

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ("step", "generation", "cache_build", "rescoring", "approximation")
METHODS = ("plain", "online", "cache", "naive")


# ------------------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------------------
def _batch(dictionary, sentences: int, length: int, device, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    def tokens(n):
        return torch.randint(dictionary.nspecial, len(dictionary), (sentences, n), generator=g).to(device)
    target = tokens(length)
    prev = torch.cat([torch.full((sentences, 1), dictionary.eos(), device=device), target[:, :-1]], dim=1)
    net_input = {"src_tokens": tokens(length), "src_lengths": torch.full((sentences,), length, device=device),
                 "prev_output_tokens": prev}
    return net_input, target


def _naive_stats(teachers, net_input):
    """The baseline: every member's logits stacked into ``[B, T, M, K]``, then the plain formulas."""
    import torch

    from teacher_statistics import naive_statistics

    with torch.no_grad():
        stacked = torch.stack([m(**net_input)[0] for m in teachers.members], dim=-2)  # [B, T, M, K]
        out = naive_statistics(stacked.flatten(0, 1))
    return {"mean_probs": out["mean_probs"], "precision": out["precision"], "stacked": stacked}


def _loss(method, logits, target, prepared):
    import torch.nn.functional as F

    from proxy_end2.losses import proxy_dirichlet_loss_from_stats
    from teacher_statistics import naive_rkl_loss

    flat = logits.flatten(0, 1)  # [N, K]
    if method == "plain":
        return F.cross_entropy(flat.float(), target.flatten(), reduction="sum")
    if method == "naive":
        return naive_rkl_loss(flat, prepared["mean_probs"], prepared["precision"]).sum()
    return proxy_dirichlet_loss_from_stats(logits, prepared).sum()


def _one_step(method, student, teachers, net_input, target, opt, meter, cached):
    """One timed step; returns seconds per part and the peaks of the stats phase and of the whole step."""
    meter.start_repeat()
    meter.start_phase()
    times = {}
    if method == "online":
        prepared, times["teachers_stats"] = meter.timed(lambda: teachers.statistics(net_input))
    elif method == "naive":
        prepared, times["teachers_stats"] = meter.timed(lambda: _naive_stats(teachers, net_input))
    elif method == "cache":  # the rows the cache's collater delivers, prepared before the step
        prepared, times["teachers_stats"] = cached, 0.0
    else:
        prepared, times["teachers_stats"] = None, 0.0
    stats_peak = meter.phase_peak()
    logits, times["student_fwd"] = meter.timed(lambda: student(**net_input)[0])
    loss, times["loss_fwd"] = meter.timed(lambda: _loss(method, logits, target, prepared))
    def backward():
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _, times["bwd_opt"] = meter.timed(backward)
    times["total"] = sum(times.values())
    return times, stats_peak, meter.phase_peak()


def step_worker(spec: dict) -> dict:
    import torch

    from proxy_end2.teachers import TeacherEnsemble
    from proxy_end2.uncertainty import topk_statistics
    from rescoring_memory import random_models

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    (student,), dictionary = random_models("prior_network", spec["vocab"], 1, spec.get("student_arch"))
    members, _ = random_models("ensemble", spec["vocab"], spec["members"], spec.get("teacher_arch"))
    student.to(device).train()
    teachers = TeacherEnsemble([m.to(device) for m in members], [f"random{i}" for i in range(len(members))])
    opt = torch.optim.Adam(student.parameters(), lr=1e-6)
    net_input, target = _batch(dictionary, spec["sentences"], spec["length"], device, spec["seed"])
    meter = Meter(device)
    # the cache method's top-k rows, computed once outside every measured step (in training they come from disk)
    cached = topk_statistics(teachers.statistics(net_input), spec["topk"]) if "cache" in spec["methods"] else None
    runs = {method: [] for method in spec["methods"]}
    peaks = {method: [] for method in spec["methods"]}
    for rep in range(spec["repeats"] + spec["warmup"]):  # methods interleaved: the load changes all alike
        for method in spec["methods"]:
            times, stats_peak, peak = _one_step(method, student, teachers, net_input, target, opt, meter, cached)
            if rep >= spec["warmup"]:
                runs[method].append(times)
                peaks[method].append((stats_peak, peak))
    out = {}
    for method, rows in runs.items():
        out[method] = {"median": {k: statistics.median(r[k] for r in rows) for k in rows[0]}, "runs": rows,
                       "stats_peak_bytes": max(p[0] for p in peaks[method]),
                       "peak_bytes": max(p[1] for p in peaks[method])}
    return out


def generation_worker(spec: dict) -> dict:
    import torch
    from fairseq.sequence_generator import SequenceGenerator

    from proxy_end2.generation.uncertainty_sequence_generator import UncertaintySequenceGenerator
    from rescoring_memory import random_models

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    (student,), dictionary = random_models("prior_network", spec["vocab"], 1, spec.get("student_arch"))
    members, _ = random_models("ensemble", spec["vocab"], spec["members"], spec.get("teacher_arch"))
    net_input, _ = _batch(dictionary, spec["sentences"], spec["length"], device, spec["seed"])
    sample = {"net_input": {k: v for k, v in net_input.items() if k != "prev_output_tokens"}}
    opts = dict(beam_size=spec["beam"], max_len_a=0, max_len_b=spec["gen_length"], min_len=spec["gen_length"])
    variants = {"student_uncertainty": (UncertaintySequenceGenerator, [student]),
                "student_plain": (SequenceGenerator, [student]),
                "ensemble_uncertainty": (UncertaintySequenceGenerator, members)}
    out = {}
    for name, (cls, models) in variants.items():
        models = [m.to(device).eval() for m in models]
        generator = cls(models, dictionary, **opts)
        runs = []
        for rep in range(spec["repeats"] + 1):  # the first run is a warm-up
            start = time.perf_counter()
            with torch.no_grad():
                generator.generate(models, sample)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if rep:
                runs.append(spec["sentences"] / (time.perf_counter() - start))
        out[name] = {"sentences_per_s": statistics.median(runs), "runs": runs}
    return out


def generation_profile_worker(spec: dict) -> dict:
    """Where the time of the student's generation with uncertainty goes: beam search and the re-scoring pass
    timed apart, and torch.profiler's operators of the re-scoring pass by self CPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from proxy_end2.generation.uncertainty_sequence_generator import UncertaintySequenceGenerator
    from rescoring_memory import random_models

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    (student,), dictionary = random_models("prior_network", spec["vocab"], 1, spec.get("student_arch"))
    student = student.to(device).eval()
    net_input, _ = _batch(dictionary, spec["sentences"], spec["length"], device, spec["seed"])
    sample = {"net_input": {k: v for k, v in net_input.items() if k != "prev_output_tokens"}}
    generator = UncertaintySequenceGenerator([student], dictionary, beam_size=spec["beam"], max_len_a=0,
                                             max_len_b=spec["gen_length"], min_len=spec["gen_length"])
    with torch.no_grad():
        generator.generate([student], sample)  # warm-up
        start = time.perf_counter()
        finalized = generator._generate(sample)
        beam = time.perf_counter() - start
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            generator.attach_uncertainty(sample, finalized)
            rescoring = time.perf_counter() - start
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1.0
    return {"beam_seconds": beam, "rescoring_seconds": rescoring,
            "top_ops": [{"name": e.key, "self_cpu_share": e.self_cpu_time_total / total, "calls": e.count}
                        for e in ops]}


def cache_build_worker(spec: dict) -> dict:
    import torch

    from proxy_end2.teacher_cache.store import CacheShardWriter, TeacherCacheSplit, shard_dir
    from proxy_end2.teachers import TeacherEnsemble
    from proxy_end2.uncertainty import topk_statistics
    from rescoring_memory import random_models

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    members, dictionary = random_models("ensemble", spec["vocab"], spec["members"], spec.get("teacher_arch"))
    teachers = TeacherEnsemble([m.to(device) for m in members], [f"random{i}" for i in range(len(members))])
    sentences = spec["sentences"] * spec["batches"]
    metadata = {"split": "bench", "shard": 0, "num_shards": 1, "split_sentences": sentences,
                "num_members": len(teachers), "data": {}, "teachers": [], "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        writer = CacheShardWriter(shard_dir(tmp, "bench", 0, 1), len(dictionary), spec["topk"], metadata)
        warm, _ = _batch(dictionary, spec["sentences"], spec["length"], device, spec["seed"] - 1)
        topk_statistics(teachers.statistics(warm), spec["topk"])  # warm-up, not timed, not written
        start = time.perf_counter()
        for batch in range(spec["batches"]):
            net_input, _ = _batch(dictionary, spec["sentences"], spec["length"], device, spec["seed"] + batch)
            rows = topk_statistics(teachers.statistics(net_input), spec["topk"]).select(
                torch.ones(spec["sentences"], spec["length"], dtype=torch.bool, device=device))
            ids = range(batch * spec["sentences"], (batch + 1) * spec["sentences"])
            writer.append(list(ids), [spec["length"]] * spec["sentences"], rows)
        seconds = time.perf_counter() - start
        manifest = writer.close()
        read = _read_back(TeacherCacheSplit(tmp, "bench"), spec, sentences)
    per_million = 1e6 / manifest["tokens"]
    return {"tokens": manifest["tokens"], "seconds": seconds, "bytes": manifest["bytes"],
            "seconds_per_million_tokens": seconds * per_million,
            "mib_per_million_tokens": manifest["bytes"] * per_million / 2**20,
            "read_seconds_per_batch": read, "read_seconds_per_million_tokens": read * 1e6 / (
                spec["sentences"] * spec["length"])}


def _read_back(cache, spec, sentences: int) -> float:
    """Median seconds to gather one batch of random sentences from the cache (what the collater does)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(spec["seed"])
    mask = torch.ones(spec["sentences"], spec["length"], dtype=torch.bool)
    runs = []
    for _ in range(max(3, spec["batches"])):
        ids = rng.choice(sentences, size=spec["sentences"], replace=False)
        start = time.perf_counter()
        cache.statistics(ids, mask)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


WORKERS = {"step": step_worker, "generation": generation_worker, "generation_profile": generation_profile_worker,
           "cache_build": cache_build_worker}


# ------------------------------------------------------------------------------------------------------
# driver side
# ------------------------------------------------------------------------------------------------------
def run_worker(kind: str, spec: dict, timeout: float, malloc: bool = False) -> dict:
    """``WORKERS[kind](spec)`` in a fresh process (glibc's mmap threshold fixed when ``malloc``)."""
    env = dict(os.environ, **(MALLOC_ENV if malloc else {}))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), BENCH_DIR, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps({"kind": kind, "spec": spec})]
    load = loadavg()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "loadavg": load}
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return {**json.loads(line[len("@@RESULT@@"):]), "loadavg_start": load, "loadavg_end": loadavg()}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail, "loadavg": load}


def _step_rows(args, device) -> list:
    rows = []
    for vocab in args.vocab:
        for members in args.members:
            spec = dict(device=device, vocab=vocab, members=members, sentences=args.sentences, length=args.length,
                        topk=args.topk, threads=args.threads, seed=args.seed, repeats=args.repeats, warmup=1,
                        methods=list(METHODS), student_arch=args.student_arch, teacher_arch=args.teacher_arch)
            timing = run_worker("step", spec, args.timeout)
            memory = (run_worker("step", dict(spec, repeats=1, warmup=0), args.timeout, malloc=True)
                      if device == "cpu" else timing)
            rows.append({"vocab": vocab, "members": members, "timing": timing, "memory": memory})
            print(f"step K={vocab} M={members}: " + _step_summary(rows[-1]), flush=True)
    return rows


def _step_summary(row) -> str:
    t = row["timing"]
    if "error" in t:
        return t["error"]
    plain = t["plain"]["median"]["total"]
    return " ".join(f"{m} {t[m]['median']['total']:.3f}s ({t[m]['median']['total'] / plain:.2f}x)" for m in METHODS)


def _generation_rows(args, device) -> list:
    rows = []
    for members in args.members:
        spec = dict(device=device, vocab=args.gen_vocab, members=members, sentences=args.gen_sentences,
                    length=args.length, beam=args.beam, gen_length=args.gen_length, threads=args.threads,
                    seed=args.seed, repeats=args.repeats, student_arch=args.student_arch,
                    teacher_arch=args.teacher_arch)
        rows.append({"vocab": args.gen_vocab, "members": members, "result": run_worker("generation", spec, args.timeout)})
        print(f"generation M={members}: {rows[-1]['result']}", flush=True)
    spec = dict(spec, members=1)
    rows.append({"vocab": args.gen_vocab, "profile": run_worker("generation_profile", spec, args.timeout)})
    print(f"generation profile: {rows[-1]['profile']}", flush=True)
    return rows


def _cache_build_rows(args, device) -> list:
    rows = []
    for vocab in args.vocab:
        spec = dict(device=device, vocab=vocab, members=max(args.members), sentences=args.sentences,
                    length=args.length, topk=args.topk, threads=args.threads, seed=args.seed, batches=args.cache_batches,
                    teacher_arch=args.teacher_arch)
        rows.append({"vocab": vocab, "members": spec["members"], "topk": args.topk,
                     "result": run_worker("cache_build", spec, args.timeout)})
        print(f"cache build K={vocab}: {rows[-1]['result']}", flush=True)
    return rows


def _rescoring_rows(args) -> list:
    from rescoring_memory import _run as rescoring_run

    rows = []
    for vocab in args.rescoring_vocab:
        for kind in ("prior_network", "ensemble"):
            spec = dict(kind=kind, vocab=vocab, members=3, short=args.rescoring_short, short_len=12, long=8,
                        long_len=200, nbest=5, memory_mb=1024, threads=args.threads, seed=1)
            rows.append({"config": spec, "result": rescoring_run(spec, args.timeout, 16)})
            print(f"rescoring K={vocab} {kind}: {rows[-1]['result']}", flush=True)
    return rows


def _approximation_rows(args) -> list:
    import teacher_cache_approximation as approx

    return approx.run(approx._parser().parse_args(["--tokens", str(args.approx_tokens), "--members", "3"]))


# ------------------------------------------------------------------------------------------------------
# RESULTS.md
# ------------------------------------------------------------------------------------------------------
def _load(r) -> str:
    return f"{r['loadavg_start']:.1f}-{r['loadavg_end']:.1f}"


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:.0f}"


def step_table(rows) -> list:
    out = ["| K | M | method | total s | ratio to plain | goal | teachers + stats s | student fwd s | loss fwd s | "
           "bwd + Adam s | stats-phase peak MiB | step peak MiB | load avg |",
           "|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        t, mem = row["timing"], row["memory"]
        if "error" in t:
            out.append(f"| {row['vocab']} | {row['members']} | error: {t['error']} |" + " |" * 11)
            continue
        plain = t["plain"]["median"]["total"]
        for method in METHODS:
            m, ratio = t[method]["median"], t[method]["median"]["total"] / plain
            goal = {"online": 1 + 0.5 * row["members"], "cache": 1.2}.get(method)
            verdict = "" if goal is None else f"<= {goal:g}: {'met' if ratio <= goal else 'missed'}"
            peaks = mem.get(method, {}) if "error" not in mem else {}
            out.append(f"| {row['vocab']} | {row['members']} | {method} | {m['total']:.3f} | {ratio:.2f} | {verdict} | "
                       f"{m['teachers_stats']:.3f} | {m['student_fwd']:.3f} | {m['loss_fwd']:.3f} | {m['bwd_opt']:.3f} | "
                       f"{_mib(peaks.get('stats_peak_bytes'))} | {_mib(peaks.get('peak_bytes'))} | "
                       f"{_load(t)} |")
    return out


def generation_table(rows) -> list:
    out = ["| K | M | student + uncertainty sent/s | student plain sent/s | ensemble + uncertainty sent/s | "
           "student unc. / plain (goal >= 0.8) | student unc. / ensemble unc. (goal >= 0.8 M) | load avg |",
           "|---:|---:|---:|---:|---:|---|---|---|"]
    for row in rows:
        if "profile" in row:
            continue
        r = row["result"]
        if "error" in r:
            out.append(f"| {row['vocab']} | {row['members']} | error: {r['error']} |" + " |" * 5)
            continue
        su, sp, eu = (r[k]["sentences_per_s"] for k in ("student_uncertainty", "student_plain", "ensemble_uncertainty"))
        goal = 0.8 * row["members"]
        out.append(f"| {row['vocab']} | {row['members']} | {su:.2f} | {sp:.2f} | {eu:.2f} | "
                   f"{su / sp:.2f}: {'met' if su / sp >= 0.8 else 'missed'} | "
                   f"{su / eu:.2f}: {'met' if su / eu >= goal else 'missed'} (>= {goal:g}) | "
                   f"{_load(r)} |")
    return out


def generation_profile_lines(rows) -> list:
    """The profile of the student's generation with uncertainty (beam search vs re-scoring, top operators)."""
    out = []
    for row in rows:
        p = row.get("profile")
        if not p or "error" in p:
            continue
        out += [f"Profile of the student with uncertainty (one run): beam search {p['beam_seconds']:.3f} s, "
                f"re-scoring pass {p['rescoring_seconds']:.3f} s; operators of the re-scoring pass by self CPU time:",
                "", "| operator | share of self CPU time | calls |", "|---|---:|---:|"]
        out += [f"| `{op['name']}` | {100 * op['self_cpu_share']:.1f} % | {op['calls']} |" for op in p["top_ops"]]
    return out


def cache_build_table(rows) -> list:
    out = ["| K | M | k | tokens | build s per million target tokens | MiB per million target tokens | "
           "read s per batch (collater) | load avg |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        r = row["result"]
        if "error" in r:
            out.append(f"| {row['vocab']} | {row['members']} | {row['topk']} | error: {r['error']} | | | | |")
            continue
        out.append(f"| {row['vocab']} | {row['members']} | {row['topk']} | {r['tokens']} | "
                   f"{r['seconds_per_million_tokens']:.0f} | {r['mib_per_million_tokens']:.1f} | "
                   f"{r['read_seconds_per_batch']:.4f} | {_load(r)} |")
    return out


def rescoring_table(rows) -> list:
    out = ["| K | model | hypotheses | peak growth MiB | seconds | sentences/s |", "|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        c, r = row["config"], row["result"]
        if "error" in r:
            out.append(f"| {c['vocab']} | {c['kind']} | error: {r['error']} | | | |")
            continue
        out.append(f"| {c['vocab']} | {c['kind']} | {r['hypotheses']} | {r['peak_growth_mib']:.0f} | "
                   f"{r['seconds']:.2f} | {r['sentences_per_s']:.2f} |")
    return out


def write_results_md(path, args, env, data, device) -> None:
    import teacher_cache_approximation as approx

    lines = ["# Benchmark results", "",
             "Generated by `benchmarks/run.py` (what each row measures: `benchmarks/README.md`; the module "
             "docstring of `benchmarks/run.py`). Do not edit by hand.", "",
             f"Command: `PYTHONPATH=. python {' '.join(env['argv'])}`", "",
             f"Machine: {env.get('gpu') or env.get('cpu')} ({device}), {env['cpu_count']} CPUs, "
             f"{env.get('mem_total_gib')} GiB RAM; torch {env['torch']}, Python {env['python']}; torch threads "
             f"{args.threads}; git {env.get('git_head')}"
             + (" with uncommitted package changes" if env.get("git_dirty_package_files") else "")
             + f"; date {datetime.date.today()}. Load average: the 1-minute load of the machine before and "
             "after each worker (other jobs compete for the cores).", ""]
    if "step" in data:
        lines += ["## Training step: distillation vs plain cross-entropy", "",
                  f"Batch: {args.sentences} sentences x {args.length} target tokens; student "
                  f"`{args.student_arch}`, M fp32 `{args.teacher_arch}` teachers (random weights), top-k {args.topk} "
                  f"for the cache; median of {args.repeats} steps after 1 warm-up. Peaks: one extra step per "
                  "method in a worker with glibc's mmap threshold fixed (CPU) or `max_memory_allocated` (GPU).", ""]
        lines += step_table(data["step"]) + [""]
    if "generation" in data:
        lines += ["## Generation throughput", "",
                  f"{args.gen_sentences} sentences, beam {args.beam}, {args.gen_length} output tokens each, "
                  f"K = {args.gen_vocab}; median of {args.repeats} runs after 1 warm-up.", ""]
        lines += generation_table(data["generation"]) + [""] + generation_profile_lines(data["generation"]) + [""]
    if "cache_build" in data:
        lines += ["## Teacher cache build", "", "The per-batch work of `proxy-end2-teacher-cache` (teachers, "
                  "statistics, top-k, shard files) on random batches; data loading not included.", ""]
        lines += cache_build_table(data["cache_build"]) + [""]
    if "rescoring" in data:
        lines += ["## Re-scoring memory (`rescoring_memory.py`)", "",
                  f"{args.rescoring_short} hypotheses of 12 tokens and 8 of 200, 5 per sentence, "
                  "`--uncertainty-memory-mb 1024`, M = 3 for the ensemble.", ""]
        lines += rescoring_table(data["rescoring"]) + [""]
    if "approximation" in data:
        lines += ["## Teacher cache approximation (`teacher_cache_approximation.py`)", "",
                  f"N = {args.approx_tokens} positions, M = 3; profiles and students: `benchmarks/README.md`.", ""]
        lines += [approx.markdown(data["approximation"]), ""]
    path.write_text("\n".join(lines))
    print(f"wrote {portable(str(path))}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="M in 1 3, K in 1000 8000, fewer repeats and sentences")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--members", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--vocab", type=int, nargs="+", default=[1000, 8000, 40000])
    p.add_argument("--sentences", type=int, default=16, help="sentences per training batch")
    p.add_argument("--length", type=int, default=24, help="source and target tokens per sentence")
    p.add_argument("--topk", type=int, default=32, help="k of the teacher cache")
    p.add_argument("--student-arch", default="prior_transformer_tiny", help="the student's fairseq arch")
    p.add_argument("--teacher-arch", default="transformer_tiny", help="the teachers' fairseq arch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gen-vocab", type=int, default=8000)
    p.add_argument("--gen-sentences", type=int, default=16)
    p.add_argument("--gen-length", type=int, default=20)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--cache-batches", type=int, default=8)
    p.add_argument("--rescoring-vocab", type=int, nargs="+", default=[8192, 40000])
    p.add_argument("--rescoring-short", type=int, default=1000)
    p.add_argument("--approx-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=max(1, min(os.cpu_count() or 1, 16)),
                   help="torch threads of each worker (default: the CPU count, at most 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per worker")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--tag", help="appended to the config part of the JSON file names (e.g. base for other archs)")
    p.add_argument("--render", action="store_true",
                   help="only write RESULTS.md again from the newest recorded JSON of each section (same --quick/--tag)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def render(args, config: str) -> int:
    """RESULTS.md from the newest ``results/run_<section>/*_<config>.json`` of each section."""
    from pathlib import Path

    data, env, settings = {}, None, None
    for section in args.sections:
        files = sorted((RESULTS_DIR / f"run_{section}").glob(f"*_{config}.json"))
        if not files:
            continue
        payload = json.loads(files[-1].read_text())
        data[section] = payload["rows"]
        env, settings = env or payload["environment"], settings or payload["settings"]
    if not data:
        raise SystemExit(f"no recorded {config} results under {portable(str(RESULTS_DIR))}")
    recorded = argparse.Namespace(**{**vars(_parser().parse_args([])), **settings})
    device = "cuda" if env.get("gpu") else "cpu"
    write_results_md(Path(args.out), recorded, env, data, device)
    return 0


QUICK = dict(members=[1, 3], vocab=[1000, 8000], repeats=3, gen_sentences=8, gen_length=12, cache_batches=4,
             rescoring_vocab=[8192], rescoring_short=200, approx_tokens=64)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print("@@RESULT@@" + json.dumps(WORKERS[job["kind"]](job["spec"])), flush=True)
        return 0
    if args.quick:
        defaults = _parser().parse_args([])
        for key, value in QUICK.items():  # only what the command line left at its default
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    sys.path.insert(0, str(REPO_ROOT))
    env = environment(device)
    runners = {"step": lambda: _step_rows(args, device), "generation": lambda: _generation_rows(args, device),
               "cache_build": lambda: _cache_build_rows(args, device), "rescoring": lambda: _rescoring_rows(args),
               "approximation": lambda: _approximation_rows(args)}
    config = ("quick" if args.quick else "full") + (f"_{args.tag}" if args.tag else "")
    if args.render:
        return render(args, config)
    data = {}
    for section in args.sections:
        data[section] = runners[section]()
        write_json(RESULTS_DIR / f"run_{section}" / f"{datetime.date.today()}_{device_label(device)}_{config}.json",
                   {"environment": env, "settings": {k: v for k, v in vars(args).items() if k not in ("out", "worker")},
                    "rows": data[section]})
    from pathlib import Path

    write_results_md(Path(args.out), args, env, data, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
