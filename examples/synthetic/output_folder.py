"""The main job's output folder, checked before any work: it must be writable, and either new, empty, or the
folder of an earlier run of this job with the same settings (then the job resumes it). Nothing is written
or removed by the check.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from config import MainJobConfig

#: the file that marks a folder as this job's output (written first by every run)
CONFIG_FILE = "config.json"

#: settings that may change between a run and its resumption: they do not change any result
RESUMABLE_CHANGES = ("out", "jobs", "threads")


class OutputFolderError(ValueError):
    """The output folder cannot be used (not writable, another program's files, or other settings)."""


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (where a new folder would be created)."""
    path = path.absolute()
    while not os.path.exists(path) and path != path.parent:  # os.path: False where a parent may not be read
        path = path.parent
    return path


def check_output_folder(cfg: MainJobConfig) -> None:
    """Raise :class:`OutputFolderError` naming ``cfg.out`` and what is wrong with it, else return (nothing
    written). A folder holding files but no ``config.json`` is someone else's: the job would mix its outputs
    with them (and a re-run would take their files for finished steps)."""
    out = Path(cfg.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputFolderError(f"--out {out} exists and is not a folder")
    base = nearest_existing(out)
    if not os.path.isdir(base) or not os.access(base, os.W_OK | os.X_OK):
        raise OutputFolderError(f"--out {out}: cannot write in {base} (permissions or a read-only file system); "
                                f"choose another --out")
    if base != out.absolute() or not os.listdir(out):
        return
    marker = out / CONFIG_FILE
    if not marker.is_file():
        raise OutputFolderError(
            f"--out {out} is not empty and is not the output of an earlier run of this job (no {CONFIG_FILE}); "
            f"choose a new or empty folder (nothing was written)")
    try:
        earlier = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise OutputFolderError(f"--out {out}: {marker} is unreadable ({exc}); choose a new folder") from None
    ours = asdict(cfg)
    changed = sorted(k for k in ours if k not in RESUMABLE_CHANGES and earlier.get(k) != ours[k])
    if changed:
        differences = "; ".join(f"--{k.replace('_', '-')}: {earlier.get(k)!r} there, {ours[k]!r} now" for k in changed)
        raise OutputFolderError(f"--out {out} holds a run with other settings ({differences}); resuming it would "
                                f"mix results: use the same settings or a new --out")
