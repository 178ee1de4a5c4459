"""Beam search (fairseq's own, untouched) followed by one teacher-forced re-scoring pass for uncertainty.

:class:`UncertaintySequenceGenerator` runs ``SequenceGenerator._generate`` exactly as the stock generator
does (same hypotheses, same scores), then feeds the top ``nbest`` hypotheses of every sentence back through
the model(s) with teacher forcing and attaches to each hypothesis dict::

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

from fairseq.data import data_utils
from fairseq.sequence_generator import SequenceGenerator

from ..uncertainty.sequence import EnsembleSequenceAccumulator, prior_network_sequence_uncertainty

PRIOR_NETWORK = "prior_network"
ENSEMBLE = "ensemble"


def is_prior_network(model) -> bool:
    return hasattr(model, "get_dirichlet_concentrations") and hasattr(model, "model_offset")


class UncertaintySequenceGenerator(SequenceGenerator):
    """fairseq's :class:`SequenceGenerator` plus token- and sequence-level uncertainty of the N-best.

    Args:
        nbest: how many hypotheses per sentence to re-score (fairseq-generate's ``--nbest``).
        max_rescore_tokens: re-score in chunks of at most this many target tokens (bounds memory:
            a chunk holds ``[hypotheses, L, K]`` logits of one member at a time, and the Prior-Network
            measures keep a few float64 ``[tokens, K]`` tensors: about 650 MB each at 2048 tokens, K = 40k).
        other args: as :class:`fairseq.sequence_generator.SequenceGenerator`.
    """

    def __init__(self, models, tgt_dict, nbest: int = 1, max_rescore_tokens: int = 2048, **kwargs):
        super().__init__(models, tgt_dict, **kwargs)
        self.nbest = max(1, int(nbest))
        self.max_rescore_tokens = max_rescore_tokens
        members = list(self.model.models)
        self.kind = PRIOR_NETWORK if len(members) == 1 and is_prior_network(members[0]) else ENSEMBLE
        self.num_members = len(members)

    @torch.no_grad()
    def generate(self, models, sample: Dict[str, Dict[str, Tensor]], **kwargs) -> List[List[Dict[str, Tensor]]]:
        finalized = super()._generate(sample, **kwargs)
        self.attach_uncertainty(sample, finalized)
        return finalized

    def _chunks(self, entries, lengths):
        chunk, tokens = [], 0
        for entry, length in zip(entries, lengths):
            if chunk and tokens + length > self.max_rescore_tokens:
                yield chunk
                chunk, tokens = [], 0
            chunk.append(entry)
            tokens += length
        if chunk:
            yield chunk

    def attach_uncertainty(self, sample, finalized: List[List[Dict[str, Tensor]]]) -> None:
        """Add ``hypo["uncertainty"]`` to the top ``nbest`` hypotheses of every sentence (in place)."""
        entries = [(i, hypo) for i, hypos in enumerate(finalized) for hypo in hypos[: self.nbest]]
        lengths = [int(hypo["tokens"].numel()) for _, hypo in entries]
        for chunk in self._chunks(entries, lengths):
            self._rescore(sample, chunk)

    def _rescore(self, sample, chunk) -> None:
        net_input = sample["net_input"]
        src_tokens = net_input["src_tokens"]
        index = torch.tensor([i for i, _ in chunk], device=src_tokens.device)
        hyp_tokens = [hypo["tokens"] for _, hypo in chunk]
        target = data_utils.collate_tokens(hyp_tokens, self.pad, self.eos, left_pad=False)  # N x L
        prev_output_tokens = data_utils.collate_tokens(
            hyp_tokens, self.pad, self.eos, left_pad=False, move_eos_to_beginning=True
        )  # N x L, EOS first: teacher forcing on the hypothesis
        batch = {
            "src_tokens": src_tokens.index_select(0, index),  # N x S
            "src_lengths": net_input["src_lengths"].index_select(0, index),
            "prev_output_tokens": prev_output_tokens,
        }
        mask = target.ne(self.pad)  # N x L
        members = list(self.model.models)
        if self.kind == PRIOR_NETWORK:
            logits = members[0](**batch)[0]  # N x L x K; the temperature applies to q only, not to the Dirichlet
            token, sequence = prior_network_sequence_uncertainty(
                logits, target, mask, model_offset=members[0].model_offset, temperature=self.temperature
            )
        else:
            accumulator = EnsembleSequenceAccumulator(target, mask)
            for member in members:
                accumulator.add(member(**batch)[0] / self.temperature)  # N x L x K, one member at a time
            token, sequence = accumulator.finalize()
        lengths = mask.sum(-1).tolist()
        for n, (_, hypo) in enumerate(chunk):
            length = lengths[n]
            hypo["uncertainty"] = {
                "kind": self.kind,
                "members": self.num_members,
                "token": {name: values[n, :length].float().cpu() for name, values in token.items()},
                "sequence": {name: float(values[n]) for name, values in sequence.items()},
            }
