"""Stop distillation at a non-finite loss, naming the sentences (``sample["id"]``) and what went bad.

What we chose, and why. fairseq's fp16 loss scaler exists for overflow in the *gradients*: the backward pass
multiplies by the loss scale, an fp16 gradient overflows, fairseq skips the update and lowers the scale. That
stays as it is. The distillation losses themselves are computed in float64 from the exactly upcast student
logits and the fp32/fp64 teacher statistics, so their *value* is finite whenever those inputs are (tests:
bf16/fp16 logits, ``|z| > 80``, one-hot and identical teachers, K = 40k). A non-finite loss value therefore
means non-finite inputs, NaN or ``+inf`` student logits (a diverged student, or fp16 activations that
overflowed) or non-finite teacher statistics, and a smaller loss scale cures neither. Skipping such batches
(what the fp16 scaler would do until it gives up with "Minimum loss scale reached") or training on them hides
the problem. So, in every training dtype, :func:`check_finite_step` raises :class:`NonFiniteLossError` naming
the criterion, the sample ids of the affected sentences, the statistic(s) that are not finite, and what to do.
fairseq-train then writes ``crash.pt`` and exits with this message.

The check costs nothing when all is well: it looks at three ``[N]`` vectors the criterion has computed anyway
(the per-token losses, the student's float64 ``logsumexp`` and the teacher MKL); only a failing step inspects
the ``[N, K]`` tensors.
"""
import math
from typing import List, Optional

import torch
from torch import Tensor

from ..uncertainty import EnsembleStatistics


class NonFiniteLossError(FloatingPointError):
    """A distillation loss (or an input it is computed from) is NaN or infinite in a train/valid step."""


def check_finite_step(criterion: str, losses: Tensor, student_lse: Tensor, stats: EnsembleStatistics,
                      logits: Tensor, mask: Tensor, sample_ids: Optional[Tensor]) -> None:
    """Raise :class:`NonFiniteLossError` unless the step's losses and inputs are finite.

    Args:
        criterion: the criterion's name, for the message.
        losses: per-token losses ``[N]`` (nats) at the non-pad positions.
        student_lse: ``logsumexp`` of the student logits per token ``[N]`` (float64): not finite exactly when a
            token's logits hold a NaN or ``+inf`` (or are all ``-inf``).
        stats: the teachers' statistics at the same ``N`` tokens (``[N, K]`` / ``[N]``).
        logits: the student logits ``[N, K]`` (any float dtype).
        mask: ``[B, T]`` non-pad positions of the batch; the ``N`` tokens are its True entries in row-major order.
        sample_ids: ``sample["id"]`` ``[B]`` (None: batch row numbers are reported instead).
    """
    mkl = stats.mkl()
    if bool(torch.isfinite(losses).all()) and bool(torch.isfinite(student_lse).all()) and bool(
            torch.isfinite(mkl).all()):
        return
    problems, bad = diagnose(losses, student_lse, stats, mkl, logits)
    raise NonFiniteLossError(
        f"{criterion}: non-finite loss or inputs at {int(bad.sum())} of {losses.numel()} target tokens of the batch, "
        f"in the sentences with sample ids {_sentences(bad, mask, sample_ids)}. Not finite: {'; '.join(problems)}. "
        f"Training stops here rather than skip the batch or train on it. {_advice(problems)}"
    )


def diagnose(losses: Tensor, student_lse: Tensor, stats: EnsembleStatistics, mkl: Tensor,
             logits: Tensor) -> "tuple[List[str], Tensor]":
    """(descriptions of the non-finite quantities, ``[N]`` mask of the tokens where anything is not finite)."""
    checks = {
        f"student logits (dtype {str(logits.dtype).replace('torch.', '')})": _bad_rows(logits, allow_neg_inf=False)
        | ~torch.isfinite(student_lse),
        "teacher statistic log_mean_probs (ln p-bar)": _bad_rows(stats.log_mean_probs, allow_neg_inf=True),
        "teacher statistic mean_log_probs (mean ln p)": _bad_rows(stats.mean_log_probs, allow_neg_inf=False),
        "teacher statistic expected_entropy": ~torch.isfinite(stats.expected_entropy),
        "teacher MKL (the proxy precision's input)": ~torch.isfinite(mkl),
        "the loss": ~torch.isfinite(losses),
    }
    problems, bad = [], torch.zeros_like(losses, dtype=torch.bool)
    for name, rows in checks.items():
        rows = rows.reshape(-1).to(bad.device)
        if bool(rows.any()):
            problems.append(f"{name} at {int(rows.sum())} token(s)")
            bad |= rows
    return problems, bad


def _bad_rows(values: Tensor, allow_neg_inf: bool) -> Tensor:
    """``[N]``: rows of ``values [N, K]`` with a NaN or ``+inf`` (and ``-inf`` unless allowed)."""
    bad = torch.isnan(values) | (values == math.inf)
    if not allow_neg_inf:
        bad |= values == -math.inf
    return bad.any(dim=-1)


def _sentences(bad_tokens: Tensor, mask: Tensor, sample_ids: Optional[Tensor], limit: int = 10) -> str:
    """The sample ids (or batch rows) of the sentences holding the bad tokens, and the first bad position."""
    positions = mask.nonzero()[bad_tokens.to(mask.device)]  # [n_bad, 2]: (batch row, target position)
    rows = sorted(set(positions[:, 0].tolist()))
    if sample_ids is not None:
        names = [int(sample_ids[r]) for r in rows]
        first = f"sample id {int(sample_ids[positions[0, 0]])}"
    else:
        names, first = rows, f"batch row {int(positions[0, 0])}"
    shown = ", ".join(map(str, names[:limit])) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"[{shown}] (first at {first}, target position {int(positions[0, 1])})"


def _advice(problems: List[str]) -> str:
    if any(p.startswith("student") for p in problems):
        return ("The student's logits are not finite: it diverged or its activations overflowed (fp16); lower "
                "--lr, use --clip-norm, or train in fp32 (fairseq 0.12's --bf16 means a TPU).")
    if any(p.startswith("teacher") for p in problems):
        return ("The teachers' statistics are not finite on these sentences: run the teachers on them (fairseq-"
                "generate --path TEACHER --gen-subset ...) or try --teacher-dtype fp32 / --teacher-stats-dtype fp64.")
    return "The inputs are finite, so this is a numerical bug of the loss: please report it with these sentences."
