"""Reference scoring (``fairseq-generate --score-reference``) with uncertainty.

:class:`UncertaintySequenceScorer` is fairseq's :class:`~fairseq.sequence_scorer.SequenceScorer` (same
hypothesis = the reference, same ``score`` and ``positional_scores``), after which the reference is re-scored by
:func:`~.rescoring.attach_uncertainty`, as the generator's N-best are: ``hypo["uncertainty"]`` holds the same
token- and sequence-level measures, so the task writes ``SU-``/``TU-`` lines for the reference (rank 0).
The re-scoring is a second teacher-forced pass per model; fairseq's own scores stay those of its scorer.
"""
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from fairseq.sequence_scorer import SequenceScorer

from .rescoring import attach_uncertainty, model_kind


class UncertaintySequenceScorer(SequenceScorer):
    """fairseq's reference scorer plus the uncertainty of the reference.

    Args:
        models: the model(s) that will score (fixes the kind of measures: Prior Network or ensemble).
        tgt_dict: the target dictionary.
        max_rescore_tokens: target tokens per re-scoring pass (see :func:`~.rescoring.attach_uncertainty`).
        other args: as :class:`fairseq.sequence_scorer.SequenceScorer`.
    """

    #: one hypothesis per sentence: the reference
    nbest = 1

    def __init__(self, models: Sequence, tgt_dict, max_rescore_tokens: int = 2048, **kwargs):
        super().__init__(tgt_dict, **kwargs)
        self.kind = model_kind(list(models))
        self.num_members = len(models)
        self.max_rescore_tokens = max_rescore_tokens

    @torch.no_grad()
    def generate(self, models, sample, **kwargs) -> List[List[Dict[str, Tensor]]]:
        hypos = super().generate(models, sample, **kwargs)
        attach_uncertainty(list(models), sample, hypos, nbest=1, pad=self.pad, eos=self.eos, kind=self.kind,
                           max_tokens=self.max_rescore_tokens)
        return hypos
