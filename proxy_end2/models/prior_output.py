"""What makes a fairseq encoder-decoder a Prior Network, shared by every Prior-Network model of the plugin
(``prior_transformer`` for text, ``prior_s2t_transformer`` for speech).

* :class:`PriorOutputConfig`: the two options, ``--no-prior-output-layernorm`` and ``--model-offset``;
* :class:`PriorOutputLayerMixin` (decoders): a LayerNorm on the decoder features right before the output
  projection, and :meth:`~PriorOutputLayerMixin.take_over_feature_layernorm_affine` for ``--student-init``;
* :class:`PriorNetworkMixin` (models): ``model_offset`` and the Dirichlet concentrations
  ``alpha_k = exp(z_k) + model_offset`` of the logits ``z`` [B, T, K];
* :func:`base_prior_architecture` / :func:`check_prior_args`: defaults and checks for the architectures.

Ryabinin, Malinin & Gales (NeurIPS 2021, appendix) add the LayerNorm for numerical stability of the
exp-parametrised concentrations; the authors' released code has none.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from fairseq.dataclass import FairseqDataclass
from fairseq.modules import LayerNorm

from ..constants import DEFAULT_MODEL_OFFSET
from ..uncertainty.dirichlet import dirichlet_concentrations


@dataclass
class PriorOutputConfig(FairseqDataclass):
    """The Prior-Network options every ``prior_*`` model adds to its base model's."""

    no_prior_output_layernorm: bool = field(
        default=False,
        metadata={
            "help": "do not apply a LayerNorm to the decoder features right before the output projection "
            "(the paper adds it for numerical stability of alpha = exp(z) + offset)"
        },
    )
    model_offset: float = field(
        default=DEFAULT_MODEL_OFFSET,
        metadata={
            "help": "Dirichlet parametrisation alpha_k = exp(z_k) + C (default 1.0, as in the paper's recipes); "
            "stored with the model so generation and uncertainty need no extra flag"
        },
    )


def base_prior_architecture(args) -> None:
    """Defaults of the Prior-Network options; call it last in every ``prior_*`` architecture."""
    args.no_prior_output_layernorm = getattr(args, "no_prior_output_layernorm", False)
    args.model_offset = getattr(args, "model_offset", None)
    if args.model_offset is None:
        args.model_offset = DEFAULT_MODEL_OFFSET


def check_prior_args(args) -> None:
    """Raise ValueError for Prior-Network options that cannot work (before the model is built)."""
    if args.model_offset < 0:
        raise ValueError(f"--model-offset must be >= 0, got {args.model_offset}")


class PriorOutputLayerMixin:
    """For a subclass of fairseq's ``TransformerDecoder``: ``class D(PriorOutputLayerMixin, TransformerDecoder)``.

    Call :meth:`add_prior_output_layernorm` at the end of ``__init__``. The logits become
    ``W LN(features) (+ b)`` instead of ``W features``.
    """

    prior_output_layernorm: Optional[LayerNorm]

    def add_prior_output_layernorm(self, args) -> None:
        """Create the output LayerNorm over the ``output_embed_dim`` features (None with
        ``--no-prior-output-layernorm``)."""
        if self.adaptive_softmax is not None:
            raise ValueError(
                "a Prior Network does not support --adaptive-softmax-cutoff: a Dirichlet over the vocabulary "
                "needs the full logit vector at every position"
            )
        self.prior_output_layernorm = None if args.no_prior_output_layernorm else LayerNorm(self.output_embed_dim)

    def output_layer(self, features: Tensor) -> Tensor:
        """Project features [B, T, C] to logits [B, T, K], normalising them first."""
        if self.prior_output_layernorm is not None:
            features = self.prior_output_layernorm(features)
        return super().output_layer(features)

    def feature_layernorm(self) -> Optional[LayerNorm]:
        """The LayerNorm whose output reaches :attr:`prior_output_layernorm` unchanged, if any: the decoder's
        final LayerNorm (pre-norm decoders, e.g. fairseq's S2T Transformer) or the last layer's
        ``final_layer_norm`` (post-norm); None when a projection (``--decoder-output-dim``) comes in between or
        there is no layer."""
        if self.project_out_dim is not None:
            return None
        if self.layer_norm is not None:
            return self.layer_norm
        last = self.layers[-1] if len(self.layers) else None
        if last is None or last.normalize_before:
            return None
        return last.final_layer_norm

    @torch.no_grad()
    def take_over_feature_layernorm_affine(self) -> bool:
        """Move the affine parameters of :meth:`feature_layernorm` into :attr:`prior_output_layernorm` and
        make its own affine the identity, for a decoder whose weights come from a plain model.

        The plain model computes ``W (g * n(x) + b)`` (``n`` the normalisation, ``g, b`` its affine); the
        student then computes ``W (g * n(n(x)) + b)``, and ``n(n(x)) = n(x) / sqrt(1 + eps (v - 1 + eps) / (v + eps))``
        with ``v`` the variance of ``x`` over the features and ``eps`` = 1e-5: the same features up to a
        factor within about ``eps / (2 min(v, 1))`` of 1 (the tests check the log-probabilities to a relative 1e-5).
        Returns False (and changes nothing) when there is no such LayerNorm.
        """
        source = self.feature_layernorm()
        if self.prior_output_layernorm is None or source is None:
            return False
        self.prior_output_layernorm.weight.copy_(source.weight)
        self.prior_output_layernorm.bias.copy_(source.bias)
        source.weight.fill_(1.0)
        source.bias.zero_()
        return True


class PriorNetworkMixin:
    """For a fairseq encoder-decoder model whose ``args`` hold :class:`PriorOutputConfig`'s options: its logits
    ``z`` are the log of (Dirichlet concentrations - model offset)."""

    @property
    def model_offset(self) -> float:
        """The constant ``c`` in ``alpha_k = exp(z_k) + c``."""
        return float(self.args.model_offset)

    def get_dirichlet_concentrations(
        self, net_output: tuple[Tensor, Dict[str, List[Optional[Any]]]], dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """Dirichlet concentrations ``alpha = exp(z) + model_offset`` [B, T, K] from a decoder output."""
        return dirichlet_concentrations(net_output[0], model_offset=self.model_offset, dtype=dtype)
