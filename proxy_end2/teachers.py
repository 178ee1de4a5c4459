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
from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from fairseq import models, utils

from .checkpoints import TeacherCheckpointError, check_checkpoints_fit_task, checkpoint_cfg, load_checkpoint_state
from .uncertainty import EnsembleStatistics, EnsembleStatisticsAccumulator

logger = logging.getLogger(__name__)

TEACHER_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def split_teacher_paths(paths: str) -> List[str]:
    """Split fairseq ``--path`` syntax (``a.pt:b.pt:c.pt``) into a list of paths."""
    return [p for p in utils.split_paths(paths) if p]


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

        Every file is checked (exists, complete, safe to unpickle, built on the task's dictionaries) before the
        first one is loaded, so that a bad path fails in seconds, not after the other teachers were loaded.

        Raises:
            FileNotFoundError: a checkpoint does not exist.
            CheckpointError: a checkpoint is unreadable, cut short or not a fairseq checkpoint.
            UnsafeCheckpointError: a checkpoint's pickle would import non-allowlisted globals (could run code).
            TeacherCheckpointError: a checkpoint was built on other dictionaries, or its model does not return
                logits over the task's target classes (:func:`check_teacher_output`).
        """
        if dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher dtype must be one of {sorted(TEACHER_DTYPES)}, got {dtype!r}")
        if len(paths) == 0:
            raise ValueError("no teacher checkpoints given (--teacher-paths a.pt:b.pt:...)")
        what = "teacher checkpoint (--teacher-paths)"
        # all files: safe, complete, fairseq checkpoints with the task's dictionaries (read lazily, cheap)
        check_checkpoints_fit_task(paths, task.source_dictionary, task.target_dictionary, what)
        members = []
        for path in paths:
            state = load_checkpoint_state(path, what, arg_overrides)
            cfg = checkpoint_cfg(state, path)
            model = models.build_model(cfg.model, task, from_checkpoint=True)
            model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
            check_teacher_output(model, path, len(task.target_dictionary))
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
    def statistics(self, net_input: Mapping[str, torch.Tensor], stats_dtype=torch.float32,
                   sample_ids: Optional[torch.Tensor] = None) -> EnsembleStatistics:
        """Run every member on ``net_input`` (teacher forcing) and return per-position statistics [B, T, K].

        Members run one after another; each member's logits are folded into the accumulator and dropped.
        Floating-point inputs (speech features) are given to fp16/bf16 teachers in their dtype (a copy; the
        batch is left as it is). Raises FloatingPointError naming the member and the sentences (``sample_ids``
        [B], else batch rows) if its logits are not finite.
        """
        self.to(net_input["src_tokens"].device)
        net_input = {k: v.to(self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                     for k, v in net_input.items()}
        accumulator = EnsembleStatisticsAccumulator(dtype=stats_dtype)
        for member, path in zip(self.members, self.paths):
            logits = member(**net_input)[0]  # B x T x K, in the teacher dtype
            if not torch.isfinite(logits).all():
                rows = (~torch.isfinite(logits)).flatten(1).any(1).nonzero().squeeze(1).tolist()
                where = (f"sample ids {[int(sample_ids[r]) for r in rows][:10]}" if sample_ids is not None
                         else f"batch rows {rows[:10]}")
                raise FloatingPointError(
                    f"teacher {path} produced non-finite logits (dtype {logits.dtype}) on the sentences with "
                    f"{where}; " + ("try --teacher-dtype fp32" if logits.dtype != torch.float32
                                    else "the checkpoint is broken or these inputs break it")
                )
            accumulator.add(logits)
            del logits
        return accumulator.finalize(release=True)  # the running sums become the statistics: no copy


def check_teacher_output(model: nn.Module, path: str, num_classes: int) -> None:
    """Raise :class:`~proxy_end2.checkpoints.TeacherCheckpointError` unless the teacher's decoder returns logits
    over ``num_classes`` target classes: an adaptive-softmax decoder returns hidden states instead, and an output
    projection of another size would not line up with the other teachers' classes."""
    decoder = getattr(model, "decoder", None)
    if getattr(decoder, "adaptive_softmax", None) is not None:
        raise TeacherCheckpointError(
            f"teacher {path} has an adaptive softmax: its decoder returns hidden states, not logits over the "
            f"{num_classes} target classes; distil from teachers with a full output projection")
    out_features = getattr(getattr(decoder, "output_projection", None), "out_features", None)
    if out_features is not None and out_features != num_classes:
        raise TeacherCheckpointError(
            f"teacher {path} outputs {out_features} classes but the task's target dictionary has {num_classes}")
