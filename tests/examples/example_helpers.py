"""Helpers of the example tests: the examples' folders on ``sys.path`` (their modules are the scripts'
siblings, not an installed package) and a runner for the examples' command lines.

Not a ``conftest.py``: a second ``conftest`` module would replace ``tests/conftest.py`` in ``sys.modules``
and break the ``from conftest import ...`` of the other test folders.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[2]
MANY_CLASSES = REPO_ROOT / "examples" / "many_classes"
CLASSIFICATION = REPO_ROOT / "examples" / "classification"
for _folder in (REPO_ROOT, MANY_CLASSES, CLASSIFICATION):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

def run_example(script: Path, out: Path, *extra: str) -> dict:
    """Run ``python script --quick --out out`` from ``out``'s parent folder; return its ``results.json``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out), *extra], cwd=out.parent,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{script.name} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    return json.loads((out / "results.json").read_text())
