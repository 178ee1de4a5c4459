"""Load fairseq checkpoints with torch's safe unpickler, and refuse unsafe ones with a message naming the file.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``, which only unpickles tensors, containers
and an allowlist of globals. fairseq checkpoints (0.12 format) store one more global: the
``argparse.Namespace`` of legacy (``add_args``) models such as the Transformer, inside the saved config.
Without it every ``fairseq-generate``, resume or teacher load fails with "Weights only load failed".

We add exactly the globals fairseq checkpoints need to the allowlist. We do NOT switch the safe loader off
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` or ``weights_only=False``), which would let a checkpoint file run
arbitrary code when it is loaded.

:func:`check_checkpoint_is_safe` reads a checkpoint's pickle *without running it* (torch's static scan of
``data.pkl``) and raises :class:`UnsafeCheckpointError`, naming the file and the globals it would import, for
anything outside the allowlist. The plugin calls it before every checkpoint it loads or lets fairseq load
(teachers, ``--student-init``, the checkpoint fairseq-train resumes from, fairseq-generate's ``--path``), so a
crafted file is refused with a clear message even where torch's own error would not name the file, and even
when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` has switched torch's default off.
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import zipfile

import torch

logger = logging.getLogger(__name__)

#: Globals that fairseq 0.12 checkpoints (translation, speech_to_text and plugin models) contain.
FAIRSEQ_CHECKPOINT_GLOBALS: tuple = (argparse.Namespace,)

#: torch's switch that turns the weights-only default off for every ``torch.load`` of the process
NO_WEIGHTS_ONLY_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint whose pickle would import globals outside the weights-only allowlist (it could run code)."""


def allow_fairseq_checkpoints() -> None:
    """Allowlist :data:`FAIRSEQ_CHECKPOINT_GLOBALS` for ``torch.load(..., weights_only=True)``. Idempotent."""
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))


def warn_if_weights_only_is_off() -> None:
    """Warn when :data:`NO_WEIGHTS_ONLY_ENV` is set: fairseq's own ``torch.load`` calls would then unpickle
    anything (the plugin's checks still refuse unsafe files on the paths it knows)."""
    if os.environ.get(NO_WEIGHTS_ONLY_ENV, "0") not in ("", "0"):
        logger.warning(f"{NO_WEIGHTS_ONLY_ENV} is set: torch.load runs any pickle, so a crafted checkpoint can run "
                       f"code when fairseq loads it; unset it (proxy_end2 never needs it)")


#: how ``torch.save`` files begin: a zip archive (torch >= 1.6) or the legacy format (a pickled magic number)
ZIP_HEAD = b"PK\x03\x04"
LEGACY_HEAD = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def checkpoint_format(path: str) -> str:
    """``"zip"`` (a complete zip archive, as ``torch.save`` writes since torch 1.6), ``"legacy"`` (the
    pre-1.6 format of e.g. older fairseq model-zoo checkpoints) or ``"unknown"`` (empty, cut short before its
    zip directory was written, or not a torch file at all)."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_HEAD))
    if head.startswith(ZIP_HEAD) and zipfile.is_zipfile(path):
        return "zip"
    if head == LEGACY_HEAD:
        return "legacy"
    return "unknown"


def unsafe_globals(path: str) -> list:
    """The globals that the pickle of the ``torch.save`` zip archive at ``path`` imports and that the weights-only
    loader would refuse (empty for a safe checkpoint), found without unpickling anything.

    Raises:
        UnsafeCheckpointError: the pickle uses instructions the static scan cannot follow (torch's weights-only
            unpickler refuses them too).
        ValueError: ``path`` is not a complete ``torch.save`` zip archive.
    """
    allow_fairseq_checkpoints()
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(f"{path}: its pickle cannot be checked ({exc}); refusing to load it") from None
    except (ValueError, RuntimeError, EOFError, KeyError) as exc:  # not a zip, torch's zip reader, a cut pickle
        raise ValueError(f"{path}: not a complete torch.save archive ({exc})") from None


def check_checkpoint_is_safe(path: str, what: str = "checkpoint") -> None:
    """Raise :class:`UnsafeCheckpointError` naming ``path`` (described as ``what``, e.g. ``"teacher checkpoint"``)
    if its pickle would import anything outside torch's weights-only allowlist (plus fairseq's globals).

    A zip archive is checked statically (only its pickle is read, nothing in it runs); a legacy-format file is
    loaded once with ``weights_only=True`` (torch's static scan does not read that format), which is safe too.

    Raises:
        UnsafeCheckpointError: the file would import other globals (or cannot be checked).
        ValueError: the file is not a complete checkpoint (empty, cut short, another format).
    """
    kind = checkpoint_format(path)
    if kind == "unknown":
        size = os.path.getsize(path)
        raise ValueError(f"{what} {path} is not a complete torch checkpoint ("
                         f"{'empty' if size == 0 else f'{size:,} bytes'}: cut short while being written or copied, "
                         f"or not a torch.save file)")
    if kind == "legacy":
        allow_fairseq_checkpoints()
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UnsafeCheckpointError(f"{what} {path} is refused by torch's weights-only loader "
                                        f"({_last_line(exc)}); loading it could run arbitrary code") from None
        except (RuntimeError, EOFError, OSError) as exc:
            raise ValueError(f"{what} {path} cannot be read ({exc})") from None
        return
    found = unsafe_globals(path)
    if found:
        raise UnsafeCheckpointError(
            f"{what} {path} is refused: its pickle would import {', '.join(found[:8])}, which torch's "
            f"weights-only loader does not allow (loading it could run arbitrary code). Do not load it with "
            f"weights_only=False or {NO_WEIGHTS_ONLY_ENV}=1 unless you made the file yourself"
        )


def _last_line(exc: BaseException) -> str:
    """The most specific line of torch's multi-line weights-only error (e.g. 'Unsupported global: ...')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if "GLOBAL" in line or "global" in line.lower()]
    return (specific or lines or [type(exc).__name__])[-1][:300]
