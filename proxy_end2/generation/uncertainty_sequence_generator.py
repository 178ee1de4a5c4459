"""Beam search (fairseq's own, untouched) followed by one teacher-forced re-scoring pass for uncertainty.

:class:`UncertaintySequenceGenerator` runs ``SequenceGenerator._generate`` exactly as the stock generator
does (same hypotheses, same scores), then feeds the top ``nbest`` hypotheses of every sentence back through
the model(s) with teacher forcing (:class:`~proxy_end2.generation.rescoring.HypothesisRescorer`, within a
memory budget) and attaches to each hypothesis dict::

    hypo["uncertainty"] = {
        "kind": "prior_network" | "ensemble",
        "members": M,
        "token": {name: FloatTensor[L]},     # one value per target position, EOS included
        "sequence": {name: float},
    }

For one Prior Network (a model with ``get_dirichlet_concentrations``, e.g. ``prior_transformer``) the
measures are the closed-form Dirichlet ones; for any other model or ensemble of models they are the
ensemble ("pe" and "ep") measures of :mod:`proxy_end2.uncertainty.sequence`. Names and meanings:
``docs/output-format.md``.
"""
from typing import Dict, List

import torch
from torch import Tensor

from fairseq.sequence_generator import SequenceGenerator

from .rescoring import DEFAULT_MEMORY_MB, HypothesisRescorer


class UncertaintySequenceGenerator(SequenceGenerator):
    """fairseq's :class:`SequenceGenerator` plus token- and sequence-level uncertainty of the N-best.

    Args:
        nbest: how many hypotheses per sentence to re-score (fairseq-generate's ``--nbest``).
        memory_mb: memory budget of one re-scoring pass, MiB (``--uncertainty-memory-mb``; see
            :mod:`proxy_end2.generation.rescoring`).
        other args: as :class:`fairseq.sequence_generator.SequenceGenerator`.
    """

    def __init__(self, models, tgt_dict, nbest: int = 1, memory_mb: float = DEFAULT_MEMORY_MB, **kwargs):
        super().__init__(models, tgt_dict, **kwargs)
        self.nbest = max(1, int(nbest))
        self.num_classes = len(tgt_dict)
        self.rescorer = HypothesisRescorer(list(self.model.models), self.pad, self.eos,
                                           temperature=self.temperature, memory_mb=memory_mb)
        self.kind = self.rescorer.kind
        self.num_members = self.rescorer.num_members

    @torch.no_grad()
    def generate(self, models, sample: Dict[str, Dict[str, Tensor]], **kwargs) -> List[List[Dict[str, Tensor]]]:
        finalized = super()._generate(sample, **kwargs)
        self.attach_uncertainty(sample, finalized)
        return finalized

    def attach_uncertainty(self, sample, finalized: List[List[Dict[str, Tensor]]]) -> None:
        """Add ``hypo["uncertainty"]`` to the top ``nbest`` hypotheses of every sentence (in place)."""
        entries = [(i, hypo) for i, hypos in enumerate(finalized) for hypo in hypos[: self.nbest]]
        self.rescorer.attach(sample, entries, self.num_classes)
