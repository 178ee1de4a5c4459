"""Prior-Network Transformer: a fairseq Transformer whose logits parametrise a Dirichlet.

The decoder's output logits ``z`` (one vector of size K = |target dictionary| per target position) are read
as Dirichlet concentrations ``alpha_k = exp(z_k) + model_offset``; beam search and the NLL keep using
``softmax(z)`` (at the Proxy-Dirichlet optimum ``softmax(z)`` equals the ensemble mean, see
:func:`proxy_end2.losses.proxy_dirichlet_loss`).

The one architectural change is a LayerNorm applied to the decoder features right before the output
projection. Ryabinin, Malinin & Gales (NeurIPS 2021, appendix) found it necessary for numerical stability of
the exp-parametrised concentrations; the authors' released code has no such layer. It can be switched off
with ``--no-prior-output-layernorm`` (then the model is an ordinary Transformer with the Dirichlet read-out).

References:
    Ryabinin, Malinin, Gales. Scaling Ensemble Distribution Distillation to Many Classes with Proxy Targets.
    NeurIPS 2021. https://arxiv.org/abs/2105.06987
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoder,
    TransformerModel,
    base_architecture,
    tiny_architecture,
    transformer_wmt_en_de,
    transformer_wmt_en_de_big,
)
from fairseq.modules import LayerNorm

from ..constants import DEFAULT_MODEL_OFFSET
from ..uncertainty.dirichlet import dirichlet_concentrations


@dataclass
class PriorTransformerConfig(TransformerConfig):
    """fairseq's ``TransformerConfig`` plus the Prior-Network options."""

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


class PriorTransformerDecoder(TransformerDecoder):
    """Transformer decoder with a LayerNorm on the features right before the output projection."""

    def __init__(self, args, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None):
        super().__init__(
            args, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn, output_projection=output_projection
        )
        if self.adaptive_softmax is not None:
            raise ValueError(
                "prior_transformer does not support --adaptive-softmax-cutoff: a Dirichlet over the vocabulary "
                "needs the full logit vector at every position"
            )
        self.prior_output_layernorm: Optional[LayerNorm] = (
            None if args.no_prior_output_layernorm else LayerNorm(self.output_embed_dim)
        )

    def feature_layernorm(self) -> Optional[LayerNorm]:
        """The LayerNorm whose output reaches :attr:`prior_output_layernorm` unchanged, if any: the decoder's
        final LayerNorm (pre-norm decoders) or the last layer's ``final_layer_norm`` (post-norm); None when a
        projection (``--decoder-output-dim``) comes in between or there is no layer."""
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
        make its own affine the identity, for a decoder whose weights come from a plain Transformer.

        The plain model computes ``W (g * n(x) + b)`` (``n`` the normalisation, ``g, b`` its affine); the
        student then computes ``W (g * n(n(x)) + b)``, and ``n(n(x)) = n(x) / sqrt(1 + eps (v - 1 + eps) / (v + eps))``
        with ``v`` the variance of ``x`` over the features and ``eps`` = 1e-5: the same features up to a
        factor within about ``eps / (2 min(v, 1))`` of 1 (the test checks the log-probabilities to 1e-5).
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

    def output_layer(self, features: Tensor) -> Tensor:
        """Project features [B, T, C] to logits [B, T, K], normalising them first."""
        if self.prior_output_layernorm is not None:
            features = self.prior_output_layernorm(features)
        return super().output_layer(features)


@register_model("prior_transformer")
class PriorTransformerModel(TransformerModel):
    """A Transformer Prior Network: its logits are the log of (Dirichlet concentrations - model offset).

    Use it as the student of ``--criterion proxy_dirichlet_distillation`` (or the baselines
    ``dirichlet_nll_distillation`` / ``ensemble_kl_distillation``) with ``--task translation_distillation``.
    For generation it behaves exactly like a Transformer (``softmax(z)``); uncertainty comes from
    :meth:`get_dirichlet_concentrations`.
    """

    @classmethod
    def add_args(cls, parser):
        """The stock Transformer's options plus :class:`PriorTransformerConfig`'s, from the dataclass (no
        defaults here, so that the architectures' defaults apply, as for fairseq's ``transformer``)."""
        gen_parser_from_dataclass(parser, PriorTransformerConfig(), delete_default=True, with_prefix="")

    @classmethod
    def build_model(cls, args, task):
        base_prior_architecture(args)
        if args.model_offset < 0:
            raise ValueError(f"--model-offset must be >= 0, got {args.model_offset}")
        return super().build_model(args, task)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        return PriorTransformerDecoder(
            args, tgt_dict, embed_tokens, no_encoder_attn=getattr(args, "no_cross_attention", False)
        )

    @property
    def model_offset(self) -> float:
        """The constant ``c`` in ``alpha_k = exp(z_k) + c``."""
        return float(self.args.model_offset)

    def get_dirichlet_concentrations(
        self, net_output: tuple[Tensor, Dict[str, List[Optional[Any]]]], dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """Dirichlet concentrations ``alpha = exp(z) + model_offset`` [B, T, K] from a decoder output."""
        return dirichlet_concentrations(net_output[0], model_offset=self.model_offset, dtype=dtype)


def base_prior_architecture(args):
    """Defaults of the Prior-Network extras; call it last in every ``prior_transformer`` architecture."""
    args.no_prior_output_layernorm = getattr(args, "no_prior_output_layernorm", False)
    args.model_offset = getattr(args, "model_offset", None)
    if args.model_offset is None:
        args.model_offset = DEFAULT_MODEL_OFFSET


@register_model_architecture("prior_transformer", "prior_transformer_tiny")
def prior_transformer_tiny(args):
    """For tests and the CPU demo: fairseq's ``transformer_tiny`` (2+2 layers, 64-dim)."""
    tiny_architecture(args)
    base_prior_architecture(args)


@register_model_architecture("prior_transformer", "prior_transformer")
def prior_transformer(args):
    """fairseq's base ``transformer`` (6+6 layers, 512-dim)."""
    base_architecture(args)
    base_prior_architecture(args)


@register_model_architecture("prior_transformer", "prior_transformer_wmt_en_de")
def prior_transformer_wmt_en_de(args):
    """fairseq's ``transformer_wmt_en_de``."""
    transformer_wmt_en_de(args)
    base_prior_architecture(args)


@register_model_architecture("prior_transformer", "prior_transformer_wmt_en_de_big")
def prior_transformer_wmt_en_de_big(args):
    """fairseq's ``transformer_wmt_en_de_big`` (1024-dim, 16 heads): the paper's WMT17 En-De student."""
    transformer_wmt_en_de_big(args)
    base_prior_architecture(args)
