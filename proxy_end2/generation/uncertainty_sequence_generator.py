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
        # every member encodes the batch once, as beam search did: the chunks reuse (reorder) these encoder
        # outputs, so a sentence is encoded exactly as in beam search whatever the chunking (a speech encoder's
        # output depends on the padding of the batch it runs in)
        encoder_outs = self.model.forward_encoder(sample["net_input"]) if self.model.has_encoder() else None
        for chunk in self._chunks(entries, lengths):
            self._rescore(encoder_outs, chunk)

    def _member_logits(self, m: int, encoder_outs, index: Tensor, prev_output_tokens: Tensor) -> Tensor:
        """Logits [N, L, K] of member ``m`` with teacher forcing on ``prev_output_tokens`` [N, L], for the
        sentences ``index`` [N] of the batch (their encoder outputs), divided by the temperature."""
        member = self.model.models[m]
        if encoder_outs is None:
            return member.decoder(prev_output_tokens)[0] / self.temperature
        encoder_out = member.encoder.reorder_encoder_out(encoder_outs[m], index)
        return member.decoder(prev_output_tokens, encoder_out=encoder_out)[0] / self.temperature

    def _rescore(self, encoder_outs, chunk) -> None:
        index = torch.tensor([i for i, _ in chunk], device=chunk[0][1]["tokens"].device)
        hyp_tokens = [hypo["tokens"] for _, hypo in chunk]
        target = data_utils.collate_tokens(hyp_tokens, self.pad, self.eos, left_pad=False)  # N x L
        prev_output_tokens = data_utils.collate_tokens(
            hyp_tokens, self.pad, self.eos, left_pad=False, move_eos_to_beginning=True
        )  # N x L, EOS first: teacher forcing on the hypothesis
        mask = target.ne(self.pad)  # N x L
        if self.kind == PRIOR_NETWORK:
            logits = self._member_logits(0, encoder_outs, index, prev_output_tokens)  # N x L x K
            token, sequence = prior_network_sequence_uncertainty(
                logits, target, mask, model_offset=self.model.models[0].model_offset
            )
        else:
            accumulator = EnsembleSequenceAccumulator(target, mask)
            for m in range(self.num_members):  # N x L x K, one member at a time
                accumulator.add(self._member_logits(m, encoder_outs, index, prev_output_tokens))
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
