"""Teacher-forced re-scoring of finished hypotheses, with the token- and sequence-level uncertainty measures
of :mod:`proxy_end2.uncertainty.sequence` attached to each hypothesis, within a memory budget.

Memory. A re-scoring pass over ``n`` hypotheses padded to length ``L`` holds ``[n, L, K]`` tensors: the logits
of one model (float32) and, for an ensemble, four float32 running sums (two for the plain member mean, two
for the prefix-weighted one): ``n * L * K * b`` bytes, ``b`` = :data:`BYTES_PER_ELEMENT` of the kind.
Everything else (the float64 Dirichlet measures, the ep measures) is computed on row chunks, whose
temporaries take at most :data:`CHUNK_BYTES_PER_ELEMENT` bytes per element of a chunk. Of the budget,
:data:`CHUNK_SHARE` goes to those chunks and the rest to the pass: the hypotheses are re-scored in groups
whose *padded* size ``n * L_max`` fits it, after sorting them by length so that a group holds hypotheses of
similar lengths (little padding). A single hypothesis longer than the budget allows is re-scored alone. The
model's own activations (a few ``[n, L, d]`` tensors, ``d`` its width) come on top. The budget counts live
tensors: glibc's allocator may keep freed blocks for later use (``MALLOC_MMAP_THRESHOLD_=65536`` makes it
return them at once; tests/generation/test_rescoring_memory.py measures the peak that way).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from fairseq.data import data_utils

from ..uncertainty._numerics import chunk_elements
from ..uncertainty.sequence import EnsembleSequenceAccumulator, prior_network_sequence_uncertainty

PRIOR_NETWORK = "prior_network"
ENSEMBLE = "ensemble"

#: bytes per padded position and class of a re-scoring pass (see the module docstring)
BYTES_PER_ELEMENT = {PRIOR_NETWORK: 4, ENSEMBLE: 5 * 4}
#: bytes per element of a row chunk of the measure passes: about twenty float64 temporaries
CHUNK_BYTES_PER_ELEMENT = 20 * 8
#: share of the budget for the row chunks of the measure passes
CHUNK_SHARE = 0.25
#: default memory budget of a re-scoring pass, MiB (``--uncertainty-memory-mb``)
DEFAULT_MEMORY_MB = 1024


def is_prior_network(model) -> bool:
    return hasattr(model, "get_dirichlet_concentrations") and hasattr(model, "model_offset")


def plan_chunks(lengths: Sequence[int], max_positions: int) -> List[List[int]]:
    """Group hypothesis indices into chunks of similar lengths whose padded size ``len(chunk) * max(length)``
    is at most ``max_positions`` (a hypothesis longer than that is a chunk of its own).

    Returns lists of indices into ``lengths``, shortest hypotheses first.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks: List[List[int]] = []
    current: List[int] = []
    for i in order:  # ascending lengths: the chunk's padded length is the length of its last hypothesis
        if current and (len(current) + 1) * lengths[i] > max_positions:
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


class HypothesisRescorer:
    """Re-scores hypotheses with one model or an ensemble, teacher-forced, and attaches their uncertainty.

    Args:
        models: the models beam search used (a Prior Network alone gets the Dirichlet measures; any other
            model, or several, the ensemble measures).
        pad, eos: the target dictionary's padding and end-of-sentence indices.
        temperature: the temperature beam search used (``--temperature``).
        memory_mb: memory budget of one re-scoring pass (MiB), see the module docstring.
    """

    def __init__(self, models: Sequence[torch.nn.Module], pad: int, eos: int, temperature: float = 1.0,
                 memory_mb: float = DEFAULT_MEMORY_MB):
        if memory_mb <= 0:
            raise ValueError(f"the re-scoring memory budget must be > 0 MiB, got {memory_mb}")
        self.models = list(models)
        self.pad, self.eos = pad, eos
        self.temperature = temperature
        self.memory_mb = memory_mb
        self.kind = PRIOR_NETWORK if len(self.models) == 1 and is_prior_network(self.models[0]) else ENSEMBLE
        self.num_members = len(self.models)

    def max_positions(self, num_classes: int) -> int:
        """Padded target positions per re-scoring pass that fit the budget for ``num_classes`` classes."""
        budget = (1.0 - CHUNK_SHARE) * self.memory_mb * 2**20
        return max(1, int(budget // (num_classes * BYTES_PER_ELEMENT[self.kind])))

    def chunk_elements(self, device: torch.device) -> int:
        """Elements per row chunk of the measure passes: the device's default, or less to fit the budget."""
        budget = CHUNK_SHARE * self.memory_mb * 2**20
        return max(1, min(chunk_elements(device), int(budget // CHUNK_BYTES_PER_ELEMENT)))

    @torch.no_grad()
    def attach(self, sample, entries: Sequence[Tuple[int, Dict]], num_classes: int) -> None:
        """Add ``hypo["uncertainty"]`` to every ``(sentence index in sample, hypo)`` of ``entries`` (in place)."""
        lengths = [int(hypo["tokens"].numel()) for _, hypo in entries]
        # every member encodes the whole batch once, as beam search did, and the passes reorder these encoder
        # outputs: a sentence is encoded exactly as in beam search however the hypotheses are grouped (a speech
        # encoder's output depends on the padding of the batch it runs in)
        encoder_outs = [self._encode(model, sample["net_input"]) for model in self.models]
        for chunk in plan_chunks(lengths, self.max_positions(num_classes)):
            self._rescore(encoder_outs, [entries[i] for i in chunk])

    @staticmethod
    def _encode(model, net_input):
        encoder = getattr(model, "encoder", None)
        return None if encoder is None else encoder.forward_torchscript(net_input)

    def _logits(self, m: int, encoder_outs, index: Tensor, prev_output_tokens: Tensor) -> Tensor:
        """Logits ``[N, L, K]`` of model ``m`` with teacher forcing on ``prev_output_tokens`` ``[N, L]``, for the
        sentences ``index`` ``[N]`` of the batch (their rows of the encoder outputs)."""
        model = self.models[m]
        if encoder_outs[m] is None:
            return model.decoder(prev_output_tokens)[0]
        encoder_out = model.encoder.reorder_encoder_out(encoder_outs[m], index)
        return model.decoder(prev_output_tokens, encoder_out=encoder_out)[0]

    def _rescore(self, encoder_outs, chunk: Sequence[Tuple[int, Dict]]) -> None:
        hyp_tokens = [hypo["tokens"] for _, hypo in chunk]
        index = torch.tensor([i for i, _ in chunk], device=hyp_tokens[0].device)
        target = data_utils.collate_tokens(hyp_tokens, self.pad, self.eos, left_pad=False)  # N x L
        prev_output_tokens = data_utils.collate_tokens(
            hyp_tokens, self.pad, self.eos, left_pad=False, move_eos_to_beginning=True
        )  # N x L, EOS first: teacher forcing on the hypothesis
        mask = target.ne(self.pad)  # N x L
        token, sequence = self._measures(encoder_outs, index, prev_output_tokens, target, mask,
                                         self.chunk_elements(target.device))
        lengths = mask.sum(-1).tolist()
        for n, (_, hypo) in enumerate(chunk):
            hypo["uncertainty"] = {
                "kind": self.kind,
                "members": self.num_members,
                "token": {name: values[n, : lengths[n]].float().cpu() for name, values in token.items()},
                "sequence": {name: float(values[n]) for name, values in sequence.items()},
            }

    def _measures(self, encoder_outs, index: Tensor, prev_output_tokens: Tensor, target: Tensor, mask: Tensor,
                  chunk: int):
        if self.kind == PRIOR_NETWORK:
            logits = self._logits(0, encoder_outs, index, prev_output_tokens)  # N x L x K
            # the temperature applies to q only, not to the Dirichlet
            return prior_network_sequence_uncertainty(
                logits, target, mask, model_offset=self.models[0].model_offset, temperature=self.temperature,
                chunk_elements=chunk,
            )
        accumulator = EnsembleSequenceAccumulator(target, mask, chunk_elements=chunk)
        for m in range(self.num_members):
            logits = self._logits(m, encoder_outs, index, prev_output_tokens)  # N x L x K, one member at a time
            if self.temperature != 1.0:
                logits = logits.div_(self.temperature)
            accumulator.add(logits)
            del logits
        return accumulator.finalize()
