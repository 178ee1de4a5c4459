"""Resuming fairseq-train after a crash: the checkpoint it resumes from must be complete and safe.

fairseq 0.12 writes the first file of each save atomically (``checkpoint_utils.torch_persistent_save``
writes ``<file>.tmp`` and renames it), but *copies* that file to the other names of the save
(``checkpoint_last.pt``, ``checkpoint_best.pt``, ...) with a plain ``shutil.copyfile``, which is not atomic.
A job killed during that copy (SIGKILL, pre-emption, a node lost) leaves a ``checkpoint_last.pt`` cut short,
and every restart then fails in ``torch.load`` ("failed finding central directory") until someone repairs the
folder by hand. A kill during the atomic write itself only leaves a stale ``<file>.tmp`` behind.

:func:`prepare_resume` runs before fairseq-train loads its checkpoint (the distillation task calls it when it
builds the student). For the file fairseq will resume from it checks, without loading it, that it is a
complete torch archive and that its pickle imports only allowlisted globals:

* unsafe (it would import other globals): :class:`~proxy_end2.safe_loading.UnsafeCheckpointError` naming it;
* cut short, and it is the default ``checkpoint_last.pt``: it is kept as ``checkpoint_last.pt.damaged`` and
  replaced by a copy of the newest intact ``checkpoint*.pt`` of the same folder (the file that was being
  copied when the job died, written atomically by fairseq; the copy is atomic: written next to it, then
  renamed), with a warning naming both; nothing is deleted;
* cut short, and it was chosen with ``--restore-file`` (or no intact file exists): a clear error.

Only the process of distributed rank 0 repairs (the others only check). fairseq loads the checkpoint on rank 0
and broadcasts it (its default), so the other ranks never read the file being replaced; with
``--load-checkpoint-on-all-dp-ranks`` they read it themselves, and could read it while rank 0 replaces it
(not handled: start such a run again if it fails).
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
from typing import List, Optional

import torch

from .safe_loading import UnsafeCheckpointError, check_checkpoint_is_safe, checkpoint_format

logger = logging.getLogger(__name__)

DEFAULT_RESTORE_FILE = "checkpoint_last.pt"  # fairseq's default --restore-file


class DamagedCheckpointError(ValueError):
    """The checkpoint fairseq-train would resume from is cut short and cannot be replaced automatically."""


def resume_checkpoint_path(save_dir: str, restore_file: str = DEFAULT_RESTORE_FILE, suffix: str = "",
                           finetune_from_model: Optional[str] = None,
                           continue_once: Optional[str] = None) -> Optional[str]:
    """The file fairseq-train will load at start-up, by the rule of fairseq's
    ``checkpoint_utils.load_checkpoint``: ``<save_dir>/checkpoint_last<suffix>.pt`` for the default
    ``--restore-file`` (or, when that does not exist, ``--continue-once`` / ``--finetune-from-model``), else
    ``--restore-file`` itself. None when that file does not exist (a fresh start)."""
    if restore_file == DEFAULT_RESTORE_FILE:
        path = os.path.join(save_dir, f"checkpoint_last{suffix or ''}.pt")
        if not os.path.exists(path):
            path = continue_once or finetune_from_model or path
    else:
        path = restore_file.replace(".pt", (suffix or "") + ".pt")
    return path if os.path.isfile(path) else None


def is_intact(path: str) -> bool:
    """A complete ``torch.save`` zip archive whose pickle imports only allowlisted globals (nothing loaded)."""
    try:
        check_checkpoint_is_safe(path)
    except (ValueError, UnsafeCheckpointError):
        return False
    return True


def intact_checkpoints(folder: str, exclude: str) -> List[str]:
    """The intact (:func:`is_intact`) ``checkpoint*.pt`` files of ``folder`` other than ``exclude``, newest first."""
    paths = [p for p in glob.glob(os.path.join(glob.escape(folder), "checkpoint*.pt"))
             if os.path.isfile(p) and not os.path.samefile(p, exclude) and checkpoint_format(p) == "zip"]
    return sorted((p for p in paths if is_intact(p)), key=os.path.getmtime, reverse=True)


def prepare_resume(save_dir: str, restore_file: str = DEFAULT_RESTORE_FILE, suffix: str = "",
                   finetune_from_model: Optional[str] = None, continue_once: Optional[str] = None,
                   repair: bool = True) -> Optional[str]:
    """Check the checkpoint fairseq-train will resume from (see the module doc) and, when it is a damaged
    default ``checkpoint_last.pt`` and ``repair`` is allowed (distributed rank 0), replace it by the newest
    intact one. The arguments are fairseq's ``--save-dir``, ``--restore-file``, ``--checkpoint-suffix``,
    ``--finetune-from-model`` and ``--continue-once``. Returns the checked path (None: a fresh start).

    Raises:
        UnsafeCheckpointError: the file's pickle would import non-allowlisted globals.
        DamagedCheckpointError: it is cut short and cannot be replaced (a ``--restore-file``, or no intact file).
    """
    path = resume_checkpoint_path(save_dir, restore_file, suffix, finetune_from_model, continue_once)
    if path is None:
        return None
    default_last = os.path.join(save_dir, f"checkpoint_last{suffix or ''}.pt")
    try:
        check_checkpoint_is_safe(path, "checkpoint to resume from")
    except UnsafeCheckpointError:
        raise
    except ValueError as damage:
        if os.path.abspath(path) != os.path.abspath(default_last):
            raise DamagedCheckpointError(f"{damage}; it was chosen with --restore-file, --continue-once or "
                                         f"--finetune-from-model: give another one") from None
        if repair:
            restore_from_newest_intact(path, str(damage))
        return path
    for other in glob.glob(os.path.join(glob.escape(save_dir), "checkpoint*.pt")):
        if os.path.isfile(other) and checkpoint_format(other) == "unknown":
            logger.warning(f"{other} is cut short or not a checkpoint (a crash while it was copied?); fairseq "
                           f"overwrites it at its next save of that name; do not use it")
    return path


def restore_from_newest_intact(path: str, damage: str) -> str:
    """Keep the damaged ``path`` as ``<path>.damaged[.N]`` and atomically replace it by a copy of the newest
    intact checkpoint of its folder; return that checkpoint's path. Raises DamagedCheckpointError if none."""
    folder = os.path.dirname(path) or "."
    candidates = intact_checkpoints(folder, exclude=path)
    if not candidates:
        raise DamagedCheckpointError(
            f"{damage}; no intact checkpoint*.pt in {folder} to resume from instead: move it away to start "
            f"from scratch, or give --restore-file")
    source = candidates[0]
    kept = _free_name(path + ".damaged")
    try:
        os.link(path, kept)  # the damaged bytes stay under the new name; `path` never disappears
    except OSError:
        shutil.copyfile(path, kept)
    tmp = path + ".restoring"
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)
    logger.warning(f"{damage}. Kept it as {kept} and resume from a copy of {source} "
                   f"({_updates(path)}), the newest intact checkpoint of {folder}")
    return source


def _free_name(name: str) -> str:
    candidate, n = name, 1
    while os.path.exists(candidate):
        candidate, n = f"{name}.{n}", n + 1
    return candidate


def _updates(path: str) -> str:
    """``update N`` of a fairseq checkpoint, read lazily (memory-mapped), for the log."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return f"update {state['optimizer_history'][-1]['num_updates']}"
    except Exception:  # only for a log line: the file was checked intact already
        return "update unknown"
