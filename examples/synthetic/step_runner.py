"""A small resumable step scheduler: run commands (or Python callables) once their prerequisites are done,
several at a time, each step's output in ``<out>/logs/<step>.log``, a ``<out>/.done/<step>`` marker when it
succeeds, so that a re-run skips what is finished."""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

logger = logging.getLogger("proxy_end2.main_job")


@dataclass
class Step:
    """One command of the job: runs once every step named in ``after`` is done."""

    name: str
    #: a command line, or a Python callable run in this process (it may call ``StepRunner.run`` itself)
    cmd: Union[Sequence, Callable[[], None]]
    after: Tuple[str, ...] = ()


class StepRunner:
    """Runs the job's commands, skipping steps whose ``done`` marker exists.

    ``threads`` is the number of intra-op threads of each command (``OMP_NUM_THREADS``); ``env`` adds
    environment variables to every command (unless already set); :meth:`run_steps` runs up to ``jobs``
    commands at once, so that small models, which use one core badly, share the machine.
    """

    def __init__(self, out: Path, threads: Optional[int] = None, env: Optional[Dict[str, str]] = None):
        self.out = out
        self.env = dict(env or {})
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self.timings: Dict[str, float] = {}
        self._live: Dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def done(self, name: str) -> bool:
        return (self.out / ".done" / name).exists()

    def mark_done(self, name: str, seconds: Optional[float] = None) -> None:
        marker = self.out / ".done" / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"seconds": seconds}))

    def run(self, name: str, cmd: Sequence) -> str:
        """Run ``cmd``; show fairseq's progress lines live, keep everything in ``logs/<name>.log``."""
        cmd = [str(c) for c in cmd]
        logger.info(f"[{name}] $ {shlex.join(cmd)}")
        log_path = self.logs / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for key, value in self.env.items():
            env.setdefault(key, value)
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        lines: List[str] = []
        start = time.time()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("$ " + shlex.join(cmd) + "\n")
            with self._lock:  # no new process once _stop_all has run
                if self._stopping:
                    raise RuntimeError(f"step {name} not started: another step failed")
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                self._live[name] = proc
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if _is_progress_line(line):
                    sys.stderr.write(f"  [{name}] {_shorten(line)}\n")
            code = proc.wait()
            with self._lock:
                self._live.pop(name, None)
        self.timings[name] = time.time() - start
        if code != 0:
            tail = "".join(lines[-30:])
            raise RuntimeError(f"step {name} failed with exit code {code}; full log: {log_path}\n{tail}")
        return "".join(lines)

    def run_step(self, step: Step) -> None:
        if callable(step.cmd):
            logger.info(f"[{step.name}] ...")
            start = time.time()
            step.cmd()
            self.timings[step.name] = time.time() - start
        else:
            self.run(step.name, step.cmd)
        self.mark_done(step.name, self.timings[step.name])

    def run_steps(self, steps: Sequence[Step], jobs: int = 1) -> None:
        """Run ``steps`` (skipping those done), at most ``jobs`` at once, each once its ``after`` steps are done.

        Ready steps start in the order given (put the long ones first). When a step fails, the steps still
        running are stopped (an interrupted fairseq-train resumes from its checkpoint_last.pt on the next
        run), nothing new starts, and the failure is raised.
        """
        names = {step.name for step in steps}
        finished = {step.name for step in steps if self.done(step.name)}
        pending = [step for step in steps if step.name not in finished]
        for step in pending:
            unknown = [dep for dep in step.after if dep not in names]
            if unknown:
                raise ValueError(f"step {step.name} waits for unknown steps {unknown}")
        running: Dict[Future, Step] = {}
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            while pending or running:
                for step in list(pending):
                    if len(running) >= max(1, jobs):
                        break
                    if all(dep in finished for dep in step.after):
                        pending.remove(step)
                        running[pool.submit(self.run_step, step)] = step
                if not running:
                    raise ValueError(f"steps {[s.name for s in pending]} wait for each other")
                completed, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in completed:
                    step = running.pop(future)
                    error = future.exception()
                    if error is not None:
                        self._stop_all()
                        wait(running)
                        raise error
                    finished.add(step.name)

    def _stop_all(self) -> None:
        with self._lock:
            self._stopping = True
            for proc in self._live.values():
                proc.terminate()


def _is_progress_line(line: str) -> bool:
    return ("| valid on " in line or "| train |" in line or "Generate " in line or "teacher ensemble" in line
            or "Traceback" in line or "Error" in line)


def _shorten(line: str) -> str:
    line = line.rstrip()
    for marker in ("| INFO | fairseq_cli.train | ", "| INFO | train | ", "| INFO | valid | "):
        line = line.split(marker)[-1]
    return line[:160]
