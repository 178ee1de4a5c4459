"""Argument checks shared by the losses (private module)."""
from __future__ import annotations

import math

from torch import Tensor

from ..uncertainty.ensemble import EnsembleStatistics
from ..uncertainty.topk import TopKStatistics


def check_student(student_logits: Tensor) -> None:
    if not student_logits.is_floating_point():
        raise ValueError(f"student logits must be a floating point tensor, got dtype {student_logits.dtype}")
    if student_logits.dim() < 1:
        raise ValueError("student logits must have a class dimension [..., K], got a 0-dim tensor")


def check_student_stats(student_logits: Tensor, stats: EnsembleStatistics | TopKStatistics) -> None:
    check_student(student_logits)
    if student_logits.shape[-1] != stats.num_classes:
        raise ValueError(
            f"class dimension mismatch: student logits have K = {student_logits.shape[-1]}, "
            f"teacher statistics have K = {stats.num_classes}"
        )
    if student_logits.shape[:-1] != stats.leading_shape:
        raise ValueError(
            f"leading shape mismatch: student logits {tuple(student_logits.shape)} [..., K] vs teacher "
            f"statistics with leading shape {tuple(stats.leading_shape)}"
        )


def check_student_teacher(student_logits: Tensor, teacher_logits: Tensor) -> None:
    check_student(student_logits)
    if teacher_logits.dim() < 2:
        raise ValueError(f"teacher logits must be [..., M, K], got shape {tuple(teacher_logits.shape)}")
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise ValueError(
            f"class dimension mismatch: student logits have K = {student_logits.shape[-1]}, "
            f"teacher logits have K = {teacher_logits.shape[-1]}"
        )
    if teacher_logits.shape[:-2] != student_logits.shape[:-1]:
        raise ValueError(
            f"leading shape mismatch: student logits {tuple(student_logits.shape)} [..., K] need teacher "
            f"logits [..., M, K] with the same [...], got {tuple(teacher_logits.shape)}"
        )


def check_model_offset(model_offset: float) -> None:
    if not (math.isfinite(model_offset) and model_offset >= 0.0):
        raise ValueError(f"model_offset must be a finite number >= 0, got {model_offset}")


def check_student_target(student_logits: Tensor, log_mean_probs: Tensor, target_precision: Tensor) -> None:
    """An explicit proxy target: mean ``[..., K]`` and precision ``[...]`` matching the student logits."""
    check_student(student_logits)
    if log_mean_probs.shape != student_logits.shape or target_precision.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"target mean {tuple(log_mean_probs.shape)} and precision {tuple(target_precision.shape)} must have "
            f"the student logits' shape {tuple(student_logits.shape)} and its leading shape"
        )
