"""The frozen teacher ensemble used by the distillation tasks.

Teachers are fairseq checkpoints (any architecture whose decoder returns ``[B, T, K]`` logits over the task's
target dictionary). They are loaded once, put in eval mode, frozen, optionally cast to fp16/bf16, and kept
in a plain Python list owned by the task, never as a submodule of the student or the criterion, so they are
never part of the student's parameters, optimizer, DDP wrapper or checkpoint.

At every train/valid step :meth:`TeacherEnsemble.statistics` runs the members one at a time on the student's
batch (teacher forcing on the same ``prev_output_tokens``) and folds each member's logits into an
:class:`~proxy_end2.uncertainty.EnsembleStatisticsAccumulator`: memory is O(B * T * K), independent of the
number of members, and a ``[B, T, M, K]`` tensor is never built.
"""
from __future__ import annotations

import logging
import os
from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from fairseq import checkpoint_utils, models, utils
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from .uncertainty import EnsembleStatistics, EnsembleStatisticsAccumulator

logger = logging.getLogger(__name__)

TEACHER_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TeacherCheckpointError(ValueError):
    """A teacher checkpoint cannot serve the task (missing, unreadable, or built on other dictionaries)."""


def split_teacher_paths(paths: str) -> List[str]:
    """Split fairseq ``--path`` syntax (``a.pt:b.pt:c.pt``) into a list of paths."""
    return [p for p in utils.split_paths(paths) if p]


def _checkpoint_cfg(state: Mapping, path: str):
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
    cfg = _checkpoint_cfg(state, path)
    model_state = state.get("model", {})
    out_rows = _embedding_rows(
        model_state, "decoder.output_projection.weight", "decoder.embed_out", "decoder.embed_tokens.weight"
    )
    if out_rows is not None and out_rows != len(tgt_dict):
        raise TeacherCheckpointError(
            f"teacher {path} predicts {out_rows} target classes but the task's target dictionary has "
            f"{len(tgt_dict)} symbols: teachers must be trained on the same binarised data (same dict.*.txt)"
        )
    in_rows = _embedding_rows(model_state, "encoder.embed_tokens.weight")
    if src_dict is not None and in_rows is not None and in_rows != len(src_dict):
        raise TeacherCheckpointError(
            f"teacher {path} embeds {in_rows} source symbols but the task's source dictionary has "
            f"{len(src_dict)}: teachers must be trained on the same binarised data (same dict.*.txt)"
        )
    task_cfg = cfg.get("task", None) if hasattr(cfg, "get") else None
    data = getattr(task_cfg, "data", None) if task_cfg is not None else None
    if not data:
        return
    data_dir = split_teacher_paths(str(data))[0]
    for lang, ours, side in (
        (getattr(task_cfg, "target_lang", None), tgt_dict, "target"),
        (getattr(task_cfg, "source_lang", None), src_dict, "source"),
    ):
        if lang is None or ours is None:
            continue
        dict_path = os.path.join(data_dir, f"dict.{lang}.txt")
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
                f"{ours.symbols[first] if first < len(ours) else '<end>'!r}); re-binarise with "
                f"fairseq-preprocess --srcdict/--tgtdict from the teachers' data"
            )


class TeacherEnsemble:
    """M frozen fairseq models evaluated with teacher forcing, reduced on the fly to ensemble statistics.

    Args:
        members: the loaded models (not registered as submodules of anything).
        paths: where each member was loaded from (for error messages).
        dtype: the members' parameter dtype (``torch.float32``, ``float16`` or ``bfloat16``).
    """

    def __init__(self, members: Sequence[nn.Module], paths: Sequence[str], dtype: torch.dtype = torch.float32):
        if len(members) == 0:
            raise ValueError("a teacher ensemble needs at least one member")
        self.members: List[nn.Module] = list(members)
        self.paths = list(paths)
        self.dtype = dtype
        self.device = torch.device("cpu")
        for member in self.members:
            member.eval()
            member.requires_grad_(False)
            member.to(dtype=dtype)

    def __len__(self) -> int:
        return len(self.members)

    @classmethod
    def load(
        cls,
        paths: Sequence[str],
        task,
        dtype: str = "fp32",
        arg_overrides: Optional[dict] = None,
    ) -> "TeacherEnsemble":
        """Load teacher checkpoints with the task's dictionaries, checking each one first.

        Raises:
            FileNotFoundError: a checkpoint does not exist.
            TeacherCheckpointError: a checkpoint is not a fairseq checkpoint or has other dictionaries.
        """
        if dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher dtype must be one of {sorted(TEACHER_DTYPES)}, got {dtype!r}")
        if len(paths) == 0:
            raise ValueError("no teacher checkpoints given (--teacher-paths a.pt:b.pt:...)")
        members = []
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"teacher checkpoint not found: {path} (from --teacher-paths)")
            state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides)
            check_teacher_dictionaries(path, state, task.source_dictionary, task.target_dictionary)
            cfg = _checkpoint_cfg(state, path)
            model = models.build_model(cfg.model, task, from_checkpoint=True)
            model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
            n_params = sum(p.numel() for p in model.parameters())
            logger.info(f"loaded teacher {len(members) + 1}/{len(paths)}: {path} ({n_params:,} parameters)")
            members.append(model)
            del state
        return cls(members, paths, TEACHER_DTYPES[dtype])

    def to(self, device: torch.device) -> "TeacherEnsemble":
        if device != self.device:
            for member in self.members:
                member.to(device=device)
            self.device = device
        return self

    @torch.no_grad()
    def statistics(self, net_input: Mapping[str, torch.Tensor], stats_dtype=torch.float32) -> EnsembleStatistics:
        """Run every member on ``net_input`` (teacher forcing) and return per-position statistics [B, T, K].

        Members run one after another; each member's logits are folded into the accumulator and dropped.
        Raises FloatingPointError naming the member if its logits are not finite.
        """
        self.to(net_input["src_tokens"].device)
        accumulator = EnsembleStatisticsAccumulator(dtype=stats_dtype)
        for member, path in zip(self.members, self.paths):
            logits = member(**net_input)[0]  # B x T x K, in the teacher dtype
            if not torch.isfinite(logits).all():
                raise FloatingPointError(
                    f"teacher {path} produced non-finite logits (dtype {logits.dtype}); "
                    + ("try --teacher-dtype fp32" if logits.dtype != torch.float32 else "the checkpoint is broken")
                )
            accumulator.add(logits)
            del logits
        return accumulator.finalize()


#: student parameters that a plain Transformer checkpoint does not have (left at their initialisation)
PRIOR_ONLY_PARAMETERS = ("prior_output_layernorm",)


def initialise_from_checkpoint(
    model: torch.nn.Module, path: str, src_dict: Optional[Dictionary] = None, tgt_dict: Optional[Dictionary] = None
) -> None:
    """Copy the weights of the checkpoint at ``path`` into ``model`` (``--student-init``).

    Every tensor of the checkpoint must exist in ``model`` with the same shape, and every parameter of
    ``model`` must come from the checkpoint except the Prior-Network-only ones (:data:`PRIOR_ONLY_PARAMETERS`).
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
    logger.info(f"student initialised from {path}" + (f"; fresh: {kept}" if kept else ""))
