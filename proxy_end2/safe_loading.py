"""Load fairseq checkpoints with torch's safe unpickler.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``, which only unpickles tensors, containers
and an allowlist of globals. fairseq checkpoints (0.12 format) store one more global: the
``argparse.Namespace`` of legacy (``add_args``) models such as the Transformer, inside the saved config.
Without it every ``fairseq-generate``, resume or teacher load fails with "Weights only load failed".

We add exactly the globals fairseq checkpoints need to the allowlist. We do NOT switch the safe loader off
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` or ``weights_only=False``), which would let a checkpoint file run
arbitrary code when it is loaded.
"""
from __future__ import annotations

import argparse

import torch

#: Globals that fairseq 0.12 checkpoints (translation, speech_to_text and plugin models) contain.
FAIRSEQ_CHECKPOINT_GLOBALS: tuple = (argparse.Namespace,)


def allow_fairseq_checkpoints() -> None:
    """Allowlist :data:`FAIRSEQ_CHECKPOINT_GLOBALS` for ``torch.load(..., weights_only=True)``. Idempotent."""
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))
