"""fairseq checkpoints given to the plugin (teachers, ``--student-init``, fairseq-generate's ``--path``): what
they must contain and how they are checked against the task, so that a wrong file fails with a clear message
naming it before any work is done. Every load goes through torch's weights-only unpickler, after a static
check that the file imports nothing else (:mod:`proxy_end2.safe_loading`).
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
import yaml
from omegaconf import OmegaConf

from fairseq import checkpoint_utils, utils
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from .safe_loading import UnsafeCheckpointError, check_checkpoint_is_safe, checkpoint_format

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint given to the plugin cannot serve: unreadable, cut short, not a fairseq checkpoint, or built
    for other dictionaries or another architecture."""


class TeacherCheckpointError(CheckpointError):
    """A teacher (or ``--student-init``) checkpoint cannot serve the task (unreadable, or built on other
    dictionaries or another architecture)."""


def check_checkpoint_file(path: str, what: str) -> None:
    """Cheap checks before anything is loaded: ``path`` exists, is a readable file, is a complete torch
    checkpoint, and its pickle imports only allowlisted globals. ``what`` names it in messages
    (e.g. ``"teacher checkpoint"``).

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: a directory, unreadable, empty, cut short, or not a torch file.
        UnsafeCheckpointError: the pickle would import other globals (it could run code when loaded).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path} is not a file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{what} {path} is not readable (file permissions)")
    try:
        check_checkpoint_is_safe(path, what)
    except UnsafeCheckpointError:
        raise
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint_state(path: str, what: str, arg_overrides: Optional[dict] = None) -> dict:
    """Check ``path`` (:func:`check_checkpoint_file`), then load it with fairseq's
    ``checkpoint_utils.load_checkpoint_to_cpu`` (torch's weights-only unpickler) and check that it is a fairseq
    checkpoint (a ``model`` state and a ``cfg`` or legacy ``args``). Errors name the file (see
    :func:`check_checkpoint_file`; CheckpointError also when fairseq cannot read the state)."""
    check_checkpoint_file(path, what)
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(f"{what} {path} is refused by torch's weights-only loader: "
                                    f"{str(exc).strip().splitlines()[-1][:300]}") from None
    except KeyError as exc:  # fairseq's upgrade of the state reads keys every fairseq checkpoint has
        raise CheckpointError(f"{what} {path} is not a fairseq checkpoint (it lacks {exc}, which fairseq "
                              f"saves in every checkpoint)") from None
    except (RuntimeError, EOFError, OSError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{what} {path} cannot be read as a fairseq checkpoint "
                              f"({type(exc).__name__}: {str(exc)[:300]})") from None
    if not isinstance(state.get("model"), Mapping) or (state.get("cfg") is None and state.get("args") is None):
        raise CheckpointError(f"{what} {path} is not a fairseq checkpoint: it needs a 'model' state and a 'cfg' "
                              f"(or legacy 'args'), it has {sorted(state)[:8]}")
    return state


def read_checkpoint_lazily(path: str, what: str) -> dict:
    """The state of the checkpoint at ``path`` with its tensors memory-mapped (zip archives), for checks that
    only look at a few shapes and the config: cheap even for large checkpoints. Checked first like
    :func:`check_checkpoint_file`; loaded with ``weights_only=True``; the config is an OmegaConf object, as
    fairseq's own loader returns it."""
    check_checkpoint_file(path, what)
    mmap = {"mmap": True} if checkpoint_format(path) == "zip" else {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, **mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{what} {path} cannot be read ({type(exc).__name__}: {str(exc)[:300]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping) or (
            state.get("cfg") is None and state.get("args") is None):
        raise CheckpointError(f"{what} {path} is not a fairseq checkpoint (no 'model' state with a 'cfg' or 'args')")
    if isinstance(state.get("cfg"), dict):
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
    return state


def check_checkpoints_fit_task(paths: Sequence[str], src_dict: Optional[Dictionary], tgt_dict: Dictionary,
                               what: str) -> None:
    """Before fairseq loads them (e.g. fairseq-generate ``--path a.pt:b.pt``): every checkpoint is safe,
    readable, a fairseq checkpoint, and built on the task's dictionaries (:func:`check_teacher_dictionaries`).
    Reads each file lazily (:func:`read_checkpoint_lazily`)."""
    for path in paths:
        state = read_checkpoint_lazily(path, what)
        check_teacher_dictionaries(path, state, src_dict, tgt_dict, what=what)
        del state


def checkpoint_cfg(state: Mapping, path: str):
    if state.get("args") is not None:
        return convert_namespace_to_omegaconf(state["args"])
    if state.get("cfg") is not None:
        return state["cfg"]
    raise TeacherCheckpointError(f"teacher checkpoint {path} has neither 'cfg' nor 'args': not a fairseq checkpoint")


def _embedding_rows(model_state: Mapping[str, torch.Tensor], *keys: str) -> Optional[int]:
    for key in keys:
        if key in model_state:
            return int(model_state[key].shape[0])
    return None


def check_teacher_dictionaries(
    path: str, state: Mapping, src_dict: Optional[Dictionary], tgt_dict: Dictionary, what: str = "teacher"
) -> None:
    """Raise :class:`TeacherCheckpointError` unless the teacher (or the model ``what``) was trained on the task's
    dictionaries.

    Three checks: (0) the model reads what the task gives it, source tokens or speech features
    (:func:`check_input_kind`); (1) the sizes of the teacher's input and output embedding matrices must equal
    the task's dictionary sizes; (2) when the dictionary files of the teacher's training data are still readable, their
    symbols must equal the task's, in the same order (equal sizes with another order would silently distil
    the wrong tokens).
    """
    cfg = checkpoint_cfg(state, path)
    model_state = state.get("model", {})
    check_input_kind(path, cfg, model_state, src_dict, what)
    out_rows = _embedding_rows(
        model_state, "decoder.output_projection.weight", "decoder.embed_out", "decoder.embed_tokens.weight"
    )
    if out_rows is not None and out_rows != len(tgt_dict):
        raise TeacherCheckpointError(
            f"{what} {path} predicts {out_rows} target classes but the task's target dictionary has "
            f"{len(tgt_dict)} symbols: teachers must be trained on the same data and dictionaries (dict.*.txt, or the "
            f"vocab_filename of config.yaml for speech)"
        )
    in_rows = _embedding_rows(model_state, "encoder.embed_tokens.weight")
    if src_dict is not None and in_rows is not None and in_rows != len(src_dict):
        raise TeacherCheckpointError(
            f"{what} {path} embeds {in_rows} source symbols but the task's source dictionary has "
            f"{len(src_dict)}: teachers must be trained on the same binarised data (same dict.*.txt)"
        )
    task_cfg = cfg.get("task", None) if hasattr(cfg, "get") else None
    for side, dict_path, ours in teacher_dictionary_files(task_cfg, src_dict, tgt_dict):
        if not os.path.isfile(dict_path):
            logger.info(f"{what} {path}: {dict_path} not readable, dictionary checked by size only")
            continue
        theirs = Dictionary.load(dict_path)
        if theirs.symbols != ours.symbols:
            first = next(
                (i for i, (a, b) in enumerate(zip(theirs.symbols, ours.symbols)) if a != b),
                min(len(theirs), len(ours)),
            )
            raise TeacherCheckpointError(
                f"{what} {path} was trained with {side} dictionary {dict_path}, which differs from the task's "
                f"(first difference at index {first}: "
                f"{theirs.symbols[first] if first < len(theirs) else '<end>'!r} vs "
                f"{ours.symbols[first] if first < len(ours) else '<end>'!r}); "
                + ("prepare the data with the teachers' vocabulary (the vocab_filename of their config.yaml)"
                   if getattr(task_cfg, "config_yaml", None) else
                   "re-binarise with fairseq-preprocess --srcdict/--tgtdict from the teachers' data")
            )


def check_input_kind(path: str, cfg, model_state: Mapping, src_dict: Optional[Dictionary], what: str) -> None:
    """Raise :class:`TeacherCheckpointError` when the model of ``path`` was trained for another kind of task:
    a model with source-token embeddings (``encoder.embed_tokens.weight``: translation) given to a task without
    a source dictionary (speech), or a model without them (speech, or no encoder) given to a text task."""
    reads_text = "encoder.embed_tokens.weight" in model_state
    if reads_text == (src_dict is not None):
        return
    task = getattr(cfg.get("task", None) if hasattr(cfg, "get") else None, "_name", None) or "unknown"
    if reads_text:
        raise TeacherCheckpointError(
            f"{what} {path} is a model of source text (task {task}: it embeds source tokens), but this task reads "
            f"speech features: give a model trained on this speech data")
    raise TeacherCheckpointError(
        f"{what} {path} has no source-token embeddings (task {task}: a speech or decoder-only model), but this "
        f"task translates source text: give a model trained on this data with a translation task")


def teacher_dictionary_files(task_cfg, src_dict: Optional[Dictionary], tgt_dict: Dictionary
                             ) -> List[Tuple[str, str, Dictionary]]:
    """``(side, dictionary file of the teacher's training data, the task's dictionary of that side)`` for every
    side a teacher's task config names: ``DATA/dict.<lang>.txt`` of translation data (``source_lang`` /
    ``target_lang``), or the ``vocab_filename`` of ``DATA/<config_yaml>`` of speech-to-text data (fairseq's
    ``speech_to_text``: target side only). Empty when the config names no data directory."""
    data = getattr(task_cfg, "data", None) if task_cfg is not None else None
    if not data:
        return []
    data_dir = utils.split_paths(str(data))[0]
    config_yaml = getattr(task_cfg, "config_yaml", None)
    if config_yaml:
        return [("target", speech_vocab_path(data_dir, config_yaml), tgt_dict)]
    files = []
    for lang, ours, side in ((getattr(task_cfg, "target_lang", None), tgt_dict, "target"),
                             (getattr(task_cfg, "source_lang", None), src_dict, "source")):
        if lang is not None and ours is not None:
            files.append((side, os.path.join(data_dir, f"dict.{lang}.txt"), ours))
    return files


def speech_vocab_path(data_dir: str, config_yaml: str) -> str:
    """The target vocabulary of fairseq speech-to-text data: ``vocab_filename`` of the data config
    (``dict.txt`` when it names none, as fairseq reads it), relative to the data directory; the config path
    itself when it is not readable (so that the caller reports it as unreadable)."""
    config_path = os.path.join(data_dir, config_yaml)
    if not os.path.isfile(config_path):
        return config_path
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    return os.path.join(data_dir, config.get("vocab_filename", "dict.txt"))


def state_mismatches(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                     optional: Sequence[str] = ()) -> str:
    """What keeps the checkpoint state ``source`` from loading into a model with state ``target`` (both
    name -> tensor; names containing one of ``optional`` may be missing from ``source``): names in one only and
    differing shapes, the first four of each; empty when it fits."""
    unexpected = [k for k in source if k not in target]
    missing = [k for k in target if k not in source and not any(p in k for p in optional)]
    shapes = [f"{k}: {tuple(source[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
              if k in source and source[k].shape != v.shape]
    return "; ".join(f"{what}: {items[:4]}" for what, items in
                     (("not in the model", unexpected), ("not in the checkpoint", missing),
                      ("shapes differ (checkpoint vs model; another dictionary?)", shapes)) if items)


def check_checkpoint_fits_model(path: str, model: torch.nn.Module, what: str) -> None:
    """Raise :class:`CheckpointError` naming ``path`` unless its model state loads into ``model`` strictly
    (same names, same shapes), as fairseq-train's resume will load it: checked lazily (memory-mapped) before
    the teachers are loaded and before fairseq fails in ``load_state_dict``."""
    state = read_checkpoint_lazily(path, what)
    problems = state_mismatches(state["model"], model.state_dict())
    if problems:
        cfg = checkpoint_cfg(state, path)
        arch = getattr(cfg.model, "_name", None) or getattr(cfg.model, "arch", None)
        task = getattr(cfg.task, "_name", None) or getattr(cfg.task, "task", None)
        raise CheckpointError(f"{what} {path} is a model of architecture {arch} (task {task}) that does not fit "
                              f"the one this run builds ({problems}); give the same --arch and task, or another "
                              f"--save-dir")


#: student parameters that a plain Transformer checkpoint does not have (left at their initialisation)
PRIOR_ONLY_PARAMETERS = ("prior_output_layernorm",)


def initialise_from_checkpoint(
    model: torch.nn.Module, path: str, src_dict: Optional[Dictionary] = None, tgt_dict: Optional[Dictionary] = None
) -> None:
    """Copy the weights of the checkpoint at ``path`` into ``model`` (``--student-init``).

    Every tensor of the checkpoint must exist in ``model`` with the same shape, and every parameter of
    ``model`` must come from the checkpoint except the Prior-Network-only ones (:data:`PRIOR_ONLY_PARAMETERS`).
    A Prior Network's output LayerNorm then takes over the affine of the LayerNorm before it
    (``take_over_feature_layernorm_affine``), so that the student starts at the checkpoint's model: the same
    log-probabilities up to float round-off and the ``eps`` of the LayerNorm, and the same translations.
    With the task's dictionaries given, the checkpoint's are checked as a teacher's are
    (:func:`check_teacher_dictionaries`: same symbols in the same order, when its dictionary files are readable).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable, cut short, or not a fairseq checkpoint (:func:`load_checkpoint_state`).
        UnsafeCheckpointError: its pickle would import non-allowlisted globals (it could run code).
        TeacherCheckpointError: the architectures or vocabularies differ (names the first mismatches).
    """
    state = load_checkpoint_state(path, "--student-init checkpoint")
    source = state["model"]
    target = model.state_dict()
    problems = state_mismatches(source, target, optional=PRIOR_ONLY_PARAMETERS)
    if problems:
        raise TeacherCheckpointError(
            f"--student-init {path} does not fit the student ({problems}); it must be a model of the same "
            f"architecture trained on the same dictionaries"
        )
    if tgt_dict is not None:
        check_teacher_dictionaries(path, state, src_dict, tgt_dict, what="--student-init checkpoint")
    model.load_state_dict(source, strict=False)
    kept = [k for k in target if k not in source]
    take_over = getattr(getattr(model, "decoder", None), "take_over_feature_layernorm_affine", None)
    if kept and take_over is not None:
        if take_over():  # the student now computes what the checkpoint's model computes
            kept = []
        else:
            logger.warning(f"--student-init {path}: the student's output LayerNorm cannot take over a preceding "
                           f"LayerNorm (e.g. --decoder-output-dim); it starts near, not at, the checkpoint's model")
    logger.info(f"student initialised from {path}" + (f"; fresh: {kept}" if kept else ""))
