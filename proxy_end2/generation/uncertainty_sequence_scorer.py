"""Reference scoring (``fairseq-generate --score-reference``) with uncertainty.

:class:`UncertaintySequenceScorer` is fairseq's :class:`~fairseq.sequence_scorer.SequenceScorer` (same
hypothesis = the reference, same ``score`` and ``positional_scores``), after which the reference is re-scored by
:class:`~.rescoring.HypothesisRescorer`, as the generator's N-best are: ``hypo["uncertainty"]`` holds the same
token- and sequence-level measures, so the task writes ``SU-``/``TU-`` lines for the reference (rank 0).
The re-scoring (:class:`~.rescoring.HypothesisRescorer`, within the same memory budget as generation) is a
second teacher-forced pass per model; fairseq's own scores stay those of its scorer.
"""
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from fairseq.sequence_scorer import SequenceScorer

from .rescoring import DEFAULT_MEMORY_MB, HypothesisRescorer


class UncertaintySequenceScorer(SequenceScorer):
    """fairseq's reference scorer plus the uncertainty of the reference.

    Args:
        models: the model(s) that will score (fixes the kind of measures: Prior Network or ensemble).
        tgt_dict: the target dictionary.
        memory_mb: memory budget of one re-scoring pass, MiB (``--uncertainty-memory-mb``).
        other args: as :class:`fairseq.sequence_scorer.SequenceScorer`.
    """

    #: one hypothesis per sentence: the reference
    nbest = 1

    def __init__(self, models: Sequence, tgt_dict, memory_mb: float = DEFAULT_MEMORY_MB, **kwargs):
        super().__init__(tgt_dict, **kwargs)
        self.num_classes = len(tgt_dict)
        self.rescorer = HypothesisRescorer(list(models), self.pad, self.eos, memory_mb=memory_mb)
        self.kind = self.rescorer.kind
        self.num_members = self.rescorer.num_members

    @torch.no_grad()
    def generate(self, models, sample, **kwargs) -> List[List[Dict[str, Tensor]]]:
        hypos = super().generate(models, sample, **kwargs)
        self.rescorer.attach(sample, [(i, sentence[0]) for i, sentence in enumerate(hypos)], self.num_classes)
        return hypos
