"""benchmarks/run.py at toy size: every worker runs and gives the numbers the tables read, the cache step loss
equals the loss from the top-k statistics, and the tables are written from them."""
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run  # noqa: E402  (benchmarks/run.py)

TOY = dict(device="cpu", vocab=64, members=2, sentences=2, length=5, topk=8, threads=1, seed=0)


def test_step_worker_measures_every_method():
    out = run.step_worker(dict(TOY, repeats=2, warmup=1, methods=list(run.METHODS)))
    for method in run.METHODS:
        median = out[method]["median"]
        assert len(out[method]["runs"]) == 2 and median["total"] > 0
        assert median["total"] == pytest.approx(sum(v for k, v in median.items() if k != "total"), rel=0.5)
    assert out["plain"]["median"]["teachers_stats"] == 0.0 and out["online"]["median"]["teachers_stats"] > 0


def test_generation_and_cache_build_workers():
    gen = run.generation_worker(dict(TOY, beam=2, gen_length=3, repeats=1))
    assert all(gen[k]["sentences_per_s"] > 0 for k in ("student_uncertainty", "student_plain", "ensemble_uncertainty"))
    build = run.cache_build_worker(dict(TOY, batches=2))
    # k * (2 + 4) + 16 bytes per token (uint16 indices) and 12 per sentence: the format's documented size
    assert build["tokens"] == 2 * 2 * 5 and build["bytes"] == build["tokens"] * (8 * 6 + 16) + 4 * 12


def test_tables_flag_missed_goals():
    step = {"vocab": 64, "members": 2, "memory": {"error": "x"}, "timing": {
        "loadavg_start": 1.0, "loadavg_end": 1.0,
        **{m: {"median": {"total": t, "teachers_stats": 0.0, "student_fwd": 0.0, "loss_fwd": 0.0, "bwd_opt": t}}
           for m, t in (("plain", 1.0), ("online", 2.5), ("cache", 1.1), ("naive", 3.0))}}}
    lines = run.step_table([step])
    assert "| online | 2.500 | 2.50 | <= 2: missed |" in lines[3] and "<= 1.2: met" in lines[4]
