"""Teacher-forced re-scoring of finished hypotheses for uncertainty: the one copy shared by
:class:`~.uncertainty_sequence_generator.UncertaintySequenceGenerator` (beam-search N-best) and
:class:`~.uncertainty_sequence_scorer.UncertaintySequenceScorer` (``--score-reference``).

:func:`attach_uncertainty` feeds the top ``nbest`` hypotheses of every sentence back through the model(s) with
teacher forcing, in chunks of at most ``max_tokens`` target tokens, and attaches to each hypothesis dict::

    hypo["uncertainty"] = {
        "kind": "prior_network" | "ensemble",
        "members": M,
        "token": {name: FloatTensor[L]},     # one value per target position, EOS included
        "sequence": {name: float},
    }

For one Prior Network (a model with ``get_dirichlet_concentrations``, e.g. ``prior_transformer``) the measures
are the closed-form Dirichlet ones; for any other model or ensemble of models they are the ensemble ("pe" and
"ep") measures of :mod:`proxy_end2.uncertainty.sequence`. Names and meanings: ``docs/output-format.md``.
"""
from typing import Dict, Iterator, List, Sequence

import torch
from torch import Tensor

from fairseq.data import data_utils

from ..uncertainty.sequence import EnsembleSequenceAccumulator, prior_network_sequence_uncertainty

PRIOR_NETWORK = "prior_network"
ENSEMBLE = "ensemble"


def is_prior_network(model) -> bool:
    return hasattr(model, "get_dirichlet_concentrations") and hasattr(model, "model_offset")


def model_kind(models: Sequence) -> str:
    """``"prior_network"`` for one Prior Network, ``"ensemble"`` for anything else (one ordinary model included)."""
    return PRIOR_NETWORK if len(models) == 1 and is_prior_network(models[0]) else ENSEMBLE


def token_chunks(entries: Sequence, lengths: Sequence[int], max_tokens: int) -> Iterator[list]:
    """Consecutive groups of ``entries`` whose ``lengths`` add up to at most ``max_tokens`` (at least one each)."""
    chunk, tokens = [], 0
    for entry, length in zip(entries, lengths):
        if chunk and tokens + length > max_tokens:
            yield chunk
            chunk, tokens = [], 0
        chunk.append(entry)
        tokens += length
    if chunk:
        yield chunk


@torch.no_grad()
def attach_uncertainty(models: Sequence, sample, finalized: List[List[Dict[str, Tensor]]], *, nbest: int, pad: int,
                       eos: int, kind: str, temperature: float = 1.0, max_tokens: int = 2048) -> None:
    """Add ``hypo["uncertainty"]`` to the top ``nbest`` hypotheses of every sentence of ``sample`` (in place).

    Args:
        models: the model(s) that produced the hypotheses, in eval mode.
        sample: fairseq's batch (its ``net_input`` source is repeated for each hypothesis).
        finalized: per sentence of the batch, its hypothesis dicts (``"tokens"``: ``[L]``, EOS last).
        nbest, pad, eos, kind: hypotheses per sentence, the dictionary's pad and EOS, :func:`model_kind`.
        temperature: the logits are divided by it (the beam search's ``--temperature``; 1 for scoring).
        max_tokens: target tokens per re-scoring pass (bounds memory: a pass holds the ``[hypotheses, L, K]``
            logits of one member at a time, and the Prior-Network measures a few float64 ``[tokens, K]``
            tensors: about 650 MB each at 2048 tokens, K = 40k).
    """
    entries = [(i, hypo) for i, hypos in enumerate(finalized) for hypo in hypos[:nbest]]
    lengths = [int(hypo["tokens"].numel()) for _, hypo in entries]
    for chunk in token_chunks(entries, lengths, max_tokens):
        _rescore(models, sample, chunk, pad, eos, kind, temperature)


def _rescore(models: Sequence, sample, chunk, pad: int, eos: int, kind: str, temperature: float) -> None:
    net_input = sample["net_input"]
    src_tokens = net_input["src_tokens"]
    index = torch.tensor([i for i, _ in chunk], device=src_tokens.device)
    hyp_tokens = [hypo["tokens"] for _, hypo in chunk]
    target = data_utils.collate_tokens(hyp_tokens, pad, eos, left_pad=False)  # N x L
    prev_output_tokens = data_utils.collate_tokens(
        hyp_tokens, pad, eos, left_pad=False, move_eos_to_beginning=True
    )  # N x L, EOS first: teacher forcing on the hypothesis
    batch = {
        "src_tokens": src_tokens.index_select(0, index),  # N x S
        "src_lengths": net_input["src_lengths"].index_select(0, index),
        "prev_output_tokens": prev_output_tokens,
    }
    mask = target.ne(pad)  # N x L
    if kind == PRIOR_NETWORK:
        logits = models[0](**batch)[0] / temperature  # N x L x K
        token, sequence = prior_network_sequence_uncertainty(
            logits, target, mask, model_offset=models[0].model_offset
        )
    else:
        accumulator = EnsembleSequenceAccumulator(target, mask)
        for member in models:
            accumulator.add(member(**batch)[0] / temperature)  # N x L x K, one member at a time
        token, sequence = accumulator.finalize()
    lengths = mask.sum(-1).tolist()
    for n, (_, hypo) in enumerate(chunk):
        length = lengths[n]
        hypo["uncertainty"] = {
            "kind": kind,
            "members": len(models),
            "token": {name: values[n, :length].float().cpu() for name, values in token.items()},
            "sequence": {name: float(values[n]) for name, values in sequence.items()},
        }
