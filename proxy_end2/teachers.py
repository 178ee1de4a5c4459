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

from .checkpoints import check_teacher_dictionaries, checkpoint_cfg
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
            cfg = checkpoint_cfg(state, path)
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
        Floating-point inputs (speech features) are given to fp16/bf16 teachers in their dtype (a copy; the
        batch is left as it is). Raises FloatingPointError naming the member if its logits are not finite.
        """
        self.to(net_input["src_tokens"].device)
        net_input = {k: v.to(self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                     for k, v in net_input.items()}
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
        return accumulator.finalize(release=True)  # the running sums become the statistics: no copy
