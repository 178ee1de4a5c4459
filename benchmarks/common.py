"""What every benchmark of this folder records with its numbers: the machine, the load, the code measured, and
paths without machine-specific parts (``results/`` holds data only)."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
#: glibc settings under which CPU peak-memory readings mean something (see Meter); they slow allocation down
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def loadavg():
    """1-minute load average of the machine (other processes competing for the cores), or None."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def portable(arg: str) -> str:
    """A path inside the repository relative to it; any other absolute path reduced to its file name (no
    machine paths in the recorded data)."""
    if not os.path.isabs(arg):
        return arg
    path = Path(arg).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return path.name


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    except OSError:
        return ""


def environment(device: str, fingerprinted=("proxy_end2",)) -> dict:
    """Python/torch versions, CPU (and GPU) model, memory, the command line, the git head and the sha256 prefix
    of every ``*.py`` file of the ``fingerprinted`` package folders (the code measured, dirty tree or not)."""
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "argv": [portable(a) for a in sys.argv]}
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"model name\s*:\s*(.*)", f.read())
        env["cpu"] = names[0] if names else platform.processor()
        with open("/proc/meminfo") as f:
            env["mem_total_gib"] = round(int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1)) / 2**20, 1)
    except OSError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_mem_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    head = _git("rev-parse", "HEAD").strip()
    env["git_head"] = head if re.fullmatch(r"[0-9a-f]{40}", head) else None
    if env["git_head"]:
        env["git_dirty_package_files"] = _git("status", "--porcelain", "--", "proxy_end2").split("\n")[:-1]
    env["package_sha256"] = {
        str(path.relative_to(REPO_ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for folder in fingerprinted for path in sorted((REPO_ROOT / folder).rglob("*.py"))
    }
    return env


def device_label(device: str) -> str:
    """Short machine name for result file names: the GPU model (``h100``) or ``cpu-<vendor>-<cores>c``."""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_properties(0).name.lower()
        match = re.search(r"\b([a-z]\d{2,4}[a-z]?)\b", name)
        return match.group(1) if match else re.sub(r"\W+", "-", name).strip("-")
    try:
        with open("/proc/cpuinfo") as f:
            model = (re.findall(r"model name\s*:\s*(.*)", f.read()) or ["cpu"])[0].lower()
    except OSError:
        model = platform.processor().lower() or "cpu"
    vendor = next((v for v in ("epyc", "xeon", "ryzen", "core") if v in model), "cpu")
    return f"cpu-{vendor}-{os.cpu_count()}c"


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON (creating the folder) and say where, relative to the repository."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {portable(str(path.resolve()))}", flush=True)


class Meter:
    """Peak memory of a phase and wall time of timed sections.

    GPU: ``torch.cuda.max_memory_allocated()`` since the phase started, minus what was allocated when the
    repetition started. CPU: the process's ``VmHWM`` (reset to ``VmRSS`` at the start of each phase through
    ``/proc/self/clear_refs``) minus ``VmRSS`` at the start of the repetition; meaningful only with glibc's
    mmap threshold fixed (:data:`MALLOC_ENV`), so that freed tensors leave the resident set at once."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        self.base = 0

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    @staticmethod
    def _proc_kb(field: str) -> int:
        with open("/proc/self/status") as f:
            return int(re.search(field + r":\s+(\d+)", f.read()).group(1))

    def start_repeat(self):
        import gc

        gc.collect()
        self.sync()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.base = self.torch.cuda.memory_allocated()
        else:
            self.base = self._proc_kb("VmRSS") * 1024

    def start_phase(self):
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current VmRSS

    def phase_peak(self) -> int:
        self.sync()
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() - self.base
        return self._proc_kb("VmHWM") * 1024 - self.base

    def timed(self, fn):
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - t0
