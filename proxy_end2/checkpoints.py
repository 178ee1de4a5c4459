"""fairseq checkpoints given to the plugin (teachers, ``--student-init``): what they must contain and how
they are checked against the task, so that a wrong file fails with a clear message before any work is done.
"""
from __future__ import annotations

import logging
import os
from typing import List, Mapping, Optional, Tuple

import torch
import yaml

from fairseq import checkpoint_utils, utils
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

logger = logging.getLogger(__name__)


class TeacherCheckpointError(ValueError):
    """A teacher checkpoint cannot serve the task (missing, unreadable, or built on other dictionaries)."""


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
    path: str, state: Mapping, src_dict: Optional[Dictionary], tgt_dict: Dictionary
) -> None:
    """Raise :class:`TeacherCheckpointError` unless the teacher was trained on the task's dictionaries.

    Two checks: (1) the sizes of the teacher's input and output embedding matrices must equal the task's
    dictionary sizes; (2) when the dictionary files of the teacher's training data are still readable, their
    symbols must equal the task's, in the same order (equal sizes with another order would silently distil
    the wrong tokens).
    """
    cfg = checkpoint_cfg(state, path)
    model_state = state.get("model", {})
    out_rows = _embedding_rows(
        model_state, "decoder.output_projection.weight", "decoder.embed_out", "decoder.embed_tokens.weight"
    )
    if out_rows is not None and out_rows != len(tgt_dict):
        raise TeacherCheckpointError(
            f"teacher {path} predicts {out_rows} target classes but the task's target dictionary has "
            f"{len(tgt_dict)} symbols: teachers must be trained on the same data and dictionaries (dict.*.txt, or the "
            f"vocab_filename of config.yaml for speech)"
        )
    in_rows = _embedding_rows(model_state, "encoder.embed_tokens.weight")
    if src_dict is not None and in_rows is not None and in_rows != len(src_dict):
        raise TeacherCheckpointError(
            f"teacher {path} embeds {in_rows} source symbols but the task's source dictionary has "
            f"{len(src_dict)}: teachers must be trained on the same binarised data (same dict.*.txt)"
        )
    task_cfg = cfg.get("task", None) if hasattr(cfg, "get") else None
    for side, dict_path, ours in teacher_dictionary_files(task_cfg, src_dict, tgt_dict):
        if not os.path.isfile(dict_path):
            logger.info(f"teacher {path}: {dict_path} not readable, dictionary checked by size only")
            continue
        theirs = Dictionary.load(dict_path)
        if theirs.symbols != ours.symbols:
            first = next(
                (i for i, (a, b) in enumerate(zip(theirs.symbols, ours.symbols)) if a != b),
                min(len(theirs), len(ours)),
            )
            raise TeacherCheckpointError(
                f"teacher {path} was trained with {side} dictionary {dict_path}, which differs from the task's "
                f"(first difference at index {first}: "
                f"{theirs.symbols[first] if first < len(theirs) else '<end>'!r} vs "
                f"{ours.symbols[first] if first < len(ours) else '<end>'!r}); "
                + ("prepare the data with the teachers' vocabulary (the vocab_filename of their config.yaml)"
                   if getattr(task_cfg, "config_yaml", None) else
                   "re-binarise with fairseq-preprocess --srcdict/--tgtdict from the teachers' data")
            )


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
        TeacherCheckpointError: the architectures or vocabularies differ (names the first mismatches).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--student-init checkpoint not found: {path}")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    source = state["model"]
    target = model.state_dict()
    unexpected = [k for k in source if k not in target]
    missing = [k for k in target if k not in source and not any(p in k for p in PRIOR_ONLY_PARAMETERS)]
    shapes = [f"{k}: {tuple(source[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
              if k in source and source[k].shape != v.shape]
    if unexpected or missing or shapes:
        raise TeacherCheckpointError(
            f"--student-init {path} does not fit the student ("
            + "; ".join(f"{what}: {items[:4]}" for what, items in
                        (("not in the student", unexpected), ("not in the checkpoint", missing),
                         ("shapes differ (checkpoint vs student; another dictionary?)", shapes)) if items)
            + "); it must be a model of the same architecture trained on the same dictionaries"
        )
    if tgt_dict is not None:
        check_teacher_dictionaries(path, state, src_dict, tgt_dict)
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
