"""Peak memory and speed of the uncertainty re-scoring pass of fairseq-generate on ragged hypotheses.

What is measured: ``UncertaintySequenceGenerator.attach_uncertainty`` (the teacher-forced re-scoring of the
N-best that follows fairseq's beam search) on a fixed set of hypotheses of very different lengths, for a
Prior Network (``prior_transformer_tiny`` student) and for an ensemble of ``transformer_tiny`` members, at a
given vocabulary size K. Beam search itself is not run (random models produce degenerate outputs): the
hypotheses are drawn at random with a controlled length mix (default: 1000 hypotheses of 12 tokens and 8
of 200, in sentences of 5 hypotheses). Every configuration runs in a fresh process; the peak resident
memory (``ru_maxrss``) is read before and after the pass (after a warm-up pass on two short hypotheses,
so that lazily loaded kernels and buffers are not counted), and the pass is timed with
``time.perf_counter``.

The same script measures older code: it uses the constructor argument the installed package has
(``memory_mb`` since the memory-bounded re-scoring; ``max_rescore_tokens`` before).

    python benchmarks/rescoring_memory.py --vocab 8192 40000 --kinds prior_network ensemble \\
        --json benchmarks/results/rescoring_memory/<date>_<device>_<config>.json
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_models(kind: str, vocab: int, members: int, arch: str | None = None):
    """Randomly initialised fairseq models on a dictionary of ``vocab`` symbols (``arch``: default
    ``prior_transformer_tiny`` for a Prior Network, ``transformer_tiny`` for ensemble members)."""
    import torch
    from fairseq import options
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_MODEL_REGISTRY

    import proxy_end2.plugin  # noqa: F401  (registers prior_transformer)

    dictionary = Dictionary()
    for i in range(vocab - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    task = SimpleNamespace(source_dictionary=dictionary, target_dictionary=dictionary)
    arch = arch or ("prior_transformer_tiny" if kind == "prior_network" else "transformer_tiny")
    args = options.parse_args_and_arch(options.get_training_parser(), [
        "data", "--task", "translation", "--arch", arch, "--user-dir", os.path.join(ROOT, "proxy_end2")])
    count = 1 if kind == "prior_network" else members
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(ARCH_MODEL_REGISTRY[arch].build_model(args, task).eval())
    return models, dictionary


def _hypotheses(dictionary, short: int, short_len: int, long: int, long_len: int, nbest: int, seed: int):
    """``finalized`` (sentences of ``nbest`` hypothesis dicts) and the sample they belong to."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = [short_len] * short + [long_len] * long
    order = torch.randperm(len(lengths), generator=g).tolist()
    num_sentences = (len(lengths) + nbest - 1) // nbest
    finalized = [[] for _ in range(num_sentences)]
    for j, i in enumerate(order):
        tokens = torch.randint(dictionary.nspecial, len(dictionary), (lengths[i],), generator=g)
        tokens[-1] = dictionary.eos()
        finalized[j // nbest].append({"tokens": tokens})
    sample = {"net_input": {
        "src_tokens": torch.randint(dictionary.nspecial, len(dictionary), (num_sentences, 15), generator=g),
        "src_lengths": torch.full((num_sentences,), 15)}}
    return sample, finalized


def worker(spec: dict) -> dict:
    """One configuration, in this (fresh) process."""
    import torch

    from proxy_end2.generation.uncertainty_sequence_generator import UncertaintySequenceGenerator

    torch.set_num_threads(spec["threads"])
    models, dictionary = random_models(spec["kind"], spec["vocab"], spec["members"])
    sample, finalized = _hypotheses(dictionary, spec["short"], spec["short_len"], spec["long"], spec["long_len"],
                                    spec["nbest"], spec["seed"])
    params = inspect.signature(UncertaintySequenceGenerator.__init__).parameters
    budget = {"memory_mb": spec["memory_mb"]} if "memory_mb" in params else {}
    generator = UncertaintySequenceGenerator(models, dictionary, nbest=spec["nbest"], beam_size=spec["nbest"],
                                             **budget)
    with torch.no_grad():  # warm-up on two short hypotheses: lazily loaded kernels and buffers are not counted
        warm_sample, warm = _hypotheses(dictionary, 2, spec["short_len"], 0, 0, spec["nbest"], spec["seed"] + 1)
        generator.attach_uncertainty(warm_sample, warm)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        generator.attach_uncertainty(sample, finalized)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hypotheses = sum(len(h) for h in finalized)
    assert all("uncertainty" in h for sentence in finalized for h in sentence)
    return {"peak_growth_mib": (after - before) / 1024, "seconds": seconds, "hypotheses": hypotheses,
            "sentences": len(finalized), "sentences_per_s": len(finalized) / seconds,
            "budget": "memory_mb" if budget else "max_rescore_tokens (default)"}


def _run(spec: dict, timeout: float, mem_limit_gib: float) -> dict:
    code = f"import json, sys; sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.dirname(__file__)!r}); " \
           f"import rescoring_memory as b; print('RESULT', json.dumps(b.worker(json.loads(sys.argv[1]))))"

    def limit():  # an allocator failure instead of the machine's OOM killer
        size = int(mem_limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
    return {"error": "out of memory" if "alloc" in proc.stderr.lower() or "memory" in tail[0].lower() else tail[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, nargs="+", default=[8192, 40000])
    p.add_argument("--kinds", nargs="+", default=["prior_network", "ensemble"], choices=["prior_network", "ensemble"])
    p.add_argument("--members", type=int, default=3, help="ensemble size")
    p.add_argument("--short", type=int, nargs=2, default=[1000, 12], metavar=("COUNT", "LENGTH"))
    p.add_argument("--long", type=int, nargs=2, default=[8, 200], metavar=("COUNT", "LENGTH"))
    p.add_argument("--nbest", type=int, default=5)
    p.add_argument("--memory-mb", type=float, default=1024, help="re-scoring budget (package default 1024)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--mem-limit-gib", type=float, default=16, help="address-space limit of each worker")
    p.add_argument("--json", help="write every result here")
    args = p.parse_args(argv)
    rows = []
    for vocab in args.vocab:
        for kind in args.kinds:
            spec = dict(kind=kind, vocab=vocab, members=args.members, short=args.short[0], short_len=args.short[1],
                        long=args.long[0], long_len=args.long[1], nbest=args.nbest, memory_mb=args.memory_mb,
                        threads=args.threads, seed=args.seed)
            result = _run(spec, args.timeout, args.mem_limit_gib)
            rows.append({"config": spec, "result": result})
            shown = result.get("error") or (f"peak +{result['peak_growth_mib']:.0f} MiB, {result['seconds']:.1f} s, "
                                           f"{result['sentences_per_s']:.2f} sentences/s")
            print(f"K={vocab:>6} {kind:<13} {shown}", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
        with open(args.json, "w") as fh:
            json.dump({"command": " ".join(["python", "benchmarks/rescoring_memory.py", *(argv or sys.argv[1:])]),
                       "environment": env, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
