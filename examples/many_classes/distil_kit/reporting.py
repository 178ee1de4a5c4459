"""Seed aggregation, Markdown tables, JSON files, a description of the machine, and logging set-up."""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

MISSING = "-"
"""Table cell of a quantity that does not exist for a model (e.g. a softmax student's knowledge uncertainty)."""


def summarise(values: Iterable[float]) -> dict[str, float]:
    """``{"mean", "std", "min", "max", "n"}`` of the finite values (sample std, ddof = 1; 0 for one value;
    NaN everywhere if there is none). ``n_nonfinite`` counts the values left out."""
    all_values = [float(v) for v in values]
    finite = np.array([v for v in all_values if math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        nan = math.nan
        return {"mean": nan, "std": nan, "min": nan, "max": nan, "n": 0, "n_nonfinite": len(all_values)}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
        "n_nonfinite": len(all_values) - int(finite.size),
    }


def format_summary(summary: dict[str, float] | None, digits: int = 3) -> str:
    """``"mean ± std"`` with ``digits`` decimals, ``MISSING`` for None or no finite value."""
    if summary is None or summary["n"] == 0:
        return MISSING
    text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
    if summary.get("n_nonfinite"):
        text += f" ({summary['n_nonfinite']} non-finite)"
    return text


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN as null, infinities as the strings "inf"/"-inf")."""
    path.write_text(json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n")


def machine_info() -> dict[str, Any]:
    """Platform, processor, logical CPUs, torch version and its thread count."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished child processes so far, s (unlike the wall
    time, it does not grow when other jobs share the machine)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def setup_logging(verbose: bool = False) -> None:
    """INFO (or DEBUG) logging to stderr with timestamps."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level with dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def aggregate(records: Sequence[dict]) -> dict[str, dict[str, float]]:
    """:func:`summarise` of every numeric (non-bool) flattened key over ``records`` (e.g. one per seed)."""
    flat = [flatten(r) for r in records]
    keys = sorted({k for f in flat for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {k: summarise(f[k] for f in flat if k in f) for k in keys}
