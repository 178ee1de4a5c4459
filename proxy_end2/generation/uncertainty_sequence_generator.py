"""Beam search (fairseq's own, untouched) followed by one teacher-forced re-scoring pass for uncertainty.

:class:`UncertaintySequenceGenerator` runs ``SequenceGenerator._generate`` exactly as the stock generator
does (same hypotheses, same scores), then re-scores the top ``nbest`` hypotheses of every sentence with
:func:`~.rescoring.attach_uncertainty`, which adds ``hypo["uncertainty"]`` (token- and sequence-level measures;
format and names in :mod:`.rescoring` and ``docs/output-format.md``).
"""
from typing import Dict, List

import torch
from torch import Tensor

from fairseq.sequence_generator import SequenceGenerator

from .rescoring import attach_uncertainty, model_kind


class UncertaintySequenceGenerator(SequenceGenerator):
    """fairseq's :class:`SequenceGenerator` plus token- and sequence-level uncertainty of the N-best.

    Args:
        nbest: how many hypotheses per sentence to re-score (fairseq-generate's ``--nbest``).
        max_rescore_tokens: re-score in chunks of at most this many target tokens (bounds memory, see
            :func:`~.rescoring.attach_uncertainty`).
        other args: as :class:`fairseq.sequence_generator.SequenceGenerator`.
    """

    def __init__(self, models, tgt_dict, nbest: int = 1, max_rescore_tokens: int = 2048, **kwargs):
        super().__init__(models, tgt_dict, **kwargs)
        self.nbest = max(1, int(nbest))
        self.max_rescore_tokens = max_rescore_tokens
        members = list(self.model.models)
        self.kind = model_kind(members)
        self.num_members = len(members)

    @torch.no_grad()
    def generate(self, models, sample: Dict[str, Dict[str, Tensor]], **kwargs) -> List[List[Dict[str, Tensor]]]:
        finalized = super()._generate(sample, **kwargs)
        self.attach_uncertainty(sample, finalized)
        return finalized

    def attach_uncertainty(self, sample, finalized: List[List[Dict[str, Tensor]]]) -> None:
        """Add ``hypo["uncertainty"]`` to the top ``nbest`` hypotheses of every sentence (in place)."""
        attach_uncertainty(list(self.model.models), sample, finalized, nbest=self.nbest, pad=self.pad, eos=self.eos,
                           kind=self.kind, temperature=self.temperature, max_tokens=self.max_rescore_tokens)
