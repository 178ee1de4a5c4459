"""Shared plumbing of the distillation criteria (not registered itself).

Each criterion turns the student's logits and the teachers' statistics at the non-pad target positions into
a per-token loss (a pure function of :mod:`proxy_end2.losses`), sums it, and logs:

* ``loss``: the criterion value per token (or per sentence with ``--sentence-avg``), in **nats**;
* ``nll_loss`` / ``ppl``: the student's NLL of the batch targets under ``softmax(z)``, in **bits** (fairseq's
  convention, so ``ppl = 2 ** nll_loss``);
* ``student_alpha0``: mean student precision ``alpha_0 = sum_k exp(z_k) + K * model_offset``;
* ``ensemble_mkl``: mean teacher MKL (nats) and ``ensemble_precision``: mean proxy precision
  ``(K - 1) / (2 MKL + eps)`` of the teachers;
* ``target_precision``: mean target precision ``B`` of the Proxy-Dirichlet loss (that criterion only).

All statistics are averaged over non-pad target tokens only, and computed in fp32/fp64 whatever the
training dtype. A non-finite loss or input stops training with a message naming the sentences
(:mod:`.non_finite`, which also says why this holds for fp16/bf16 training too).
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import II
from torch import Tensor

from fairseq import utils
from fairseq.criterions import FairseqCriterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from ..constants import DEFAULT_MODEL_OFFSET, TEACHER_STATS_KEY
from ..uncertainty import EnsembleStatistics, proxy_precision
from ..uncertainty._numerics import row_slices
from .non_finite import check_finite_step

def _logsumexp_f64(logits: Tensor) -> Tensor:
    """``logsumexp`` of ``logits`` [N, K] over the classes in float64, [N], computed on row chunks so that the
    float64 temporaries stay small whatever N * K is."""
    out = torch.empty(logits.size(0), dtype=torch.float64, device=logits.device)
    for rows in row_slices(logits.size(0), logits.size(-1), logits.device):
        out[rows] = torch.logsumexp(logits[rows].double(), dim=-1)
    return out


#: statistics logged as sums over tokens and reported as per-token means
TOKEN_MEAN_KEYS = ("student_alpha0", "ensemble_mkl", "ensemble_precision", "target_precision")


@dataclass
class DistillationCriterionConfig(FairseqDataclass):
    sentence_avg: bool = II("optimization.sentence_avg")


def model_offset_of(model) -> float:
    """The Dirichlet offset ``c`` of ``alpha = exp(z) + c``: the Prior Network's own, 1.0 for other models."""
    return float(getattr(model, "model_offset", DEFAULT_MODEL_OFFSET))


class DistillationCriterion(FairseqCriterion):
    """Base class: per-token losses from (student logits [N, K], teacher statistics [N, K]) at non-pad tokens."""

    #: the task must run the teacher ensemble and attach its statistics to the sample
    requires_teachers = True
    #: the criterion also works from an offline teacher cache (top-k statistics, ``--teacher-cache``)
    supports_teacher_cache = False

    def __init__(self, task, sentence_avg: bool):
        super().__init__(task)
        self.sentence_avg = sentence_avg

    def token_losses(self, model, logits: Tensor, stats: EnsembleStatistics) -> Tensor:
        """Per-token loss [N] (nats) from student logits [N, K] and teacher statistics [N, K]."""
        raise NotImplementedError

    def target_precision(self, stats: EnsembleStatistics) -> Optional[Tensor]:
        """Per-token precision of the criterion's Dirichlet target [N], if it has one."""
        return None

    def forward(self, model, sample, reduce=True):
        stats: Optional[EnsembleStatistics] = sample.get(TEACHER_STATS_KEY)
        if stats is None:
            raise ValueError(
                f"criterion {self.__class__.__name__} needs teacher statistics in the batch: train with "
                f"--task translation_distillation (or speech_to_text_distillation) --teacher-paths "
                f"teacher1.pt:teacher2.pt:..."
            )
        net_output = model(**sample["net_input"])
        logits = net_output[0]  # B x T x K
        target = model.get_targets(sample, net_output)  # B x T
        if (*stats.leading_shape, stats.num_classes) != tuple(logits.shape):
            raise ValueError(
                f"teacher statistics have shape {(*stats.leading_shape, stats.num_classes)} but the student's logits "
                f"have shape {tuple(logits.shape)}: teachers and student must share the target dictionary"
            )
        mask = target.ne(self.padding_idx)  # B x T
        no_padding = bool(mask.all())
        if no_padding:  # views: no N x K copies of the logits and statistics
            token_logits = logits.reshape(-1, logits.size(-1))  # N x K
            token_target = target.reshape(-1)  # N
        else:
            token_logits = logits[mask]  # N x K
            token_target = target[mask]  # N
        token_stats = stats.select(mask)  # views when nothing is padding
        losses = self.token_losses(model, token_logits, token_stats)  # N
        lse = _logsumexp_f64(token_logits.detach())  # N, float64: gives the NLL and alpha_0, and flags NaN/+inf
        check_finite_step(self.__class__.__name__, losses.detach(), lse, token_stats, token_logits.detach(), mask,
                          sample.get("id"))

        if reduce:
            loss = losses.sum()
        elif no_padding:
            loss = losses.reshape(mask.shape)  # B x T
        else:
            loss = losses.new_zeros(mask.shape).masked_scatter(mask, losses)  # B x T, 0 at padding
        ntokens = sample["ntokens"]
        sample_size = sample["target"].size(0) if self.sentence_avg else ntokens
        logging_output = {
            "loss": loss.data if reduce else losses.data.sum(),
            "ntokens": ntokens,
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        logging_output.update(self._token_statistics(model, token_logits, token_stats, token_target, lse))
        return loss, sample_size, logging_output

    @torch.no_grad()
    def _token_statistics(self, model, logits: Tensor, stats: EnsembleStatistics, target: Tensor,
                          lse: Tensor) -> dict:
        # one float64 logsumexp per token (lse, on row chunks: no N x K float64 copy) gives both the NLL and
        # alpha_0; the teacher MKL is computed once per step (cached on the statistics) for the MKL-based entries
        logits = logits.detach()
        num_classes = logits.size(-1)
        nll = (lse - logits.gather(-1, target.unsqueeze(-1)).squeeze(-1).double()).sum()
        alpha0 = lse.exp() + num_classes * model_offset_of(model)  # N
        out = {
            "nll_loss": nll,
            "student_alpha0": alpha0.sum(),
            "ensemble_mkl": stats.mkl().double().sum(),
            "ensemble_precision": proxy_precision(stats, "mkl").double().sum(),
        }
        target_precision = self.target_precision(stats)
        if target_precision is not None:
            out["target_precision"] = target_precision.double().sum()
        return out

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        loss_sum = sum(log.get("loss", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        nll_sum = sum(log.get("nll_loss", 0) for log in logging_outputs)
        # loss in nats (a KL/Dirichlet criterion, not a cross-entropy); nll in bits like fairseq's CE
        metrics.log_scalar("loss", utils.item(loss_sum) / max(sample_size, 1), sample_size, round=4)
        metrics.log_scalar("nll_loss", utils.item(nll_sum) / max(ntokens, 1) / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        for key in TOKEN_MEAN_KEYS:
            if any(key in log for log in logging_outputs):
                total = sum(log.get(key, 0) for log in logging_outputs)
                metrics.log_scalar(key, utils.item(total) / max(ntokens, 1), ntokens, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
