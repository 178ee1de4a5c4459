"""Prior-Network Transformer: a fairseq Transformer whose logits parametrise a Dirichlet.

The decoder's output logits ``z`` (one vector of size K = |target dictionary| per target position) are read
as Dirichlet concentrations ``alpha_k = exp(z_k) + model_offset``; beam search and the NLL keep using
``softmax(z)`` (at the Proxy-Dirichlet optimum ``softmax(z)`` equals the ensemble mean, see
:func:`proxy_end2.losses.proxy_dirichlet_loss`).

The one architectural change is a LayerNorm applied to the decoder features right before the output
projection (shared with the speech model: :mod:`proxy_end2.models.prior_output`). Ryabinin, Malinin & Gales
(NeurIPS 2021, appendix) found it necessary for numerical stability of the exp-parametrised concentrations;
the authors' released code has no such layer. It can be switched off with ``--no-prior-output-layernorm``
(then the model is an ordinary Transformer with the Dirichlet read-out).

References:
    Ryabinin, Malinin, Gales. Scaling Ensemble Distribution Distillation to Many Classes with Proxy Targets.
    NeurIPS 2021. https://arxiv.org/abs/2105.06987
"""

from dataclasses import dataclass

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

from .prior_output import (
    PriorNetworkMixin,
    PriorOutputConfig,
    PriorOutputLayerMixin,
    base_prior_architecture,
    check_prior_args,
)


@dataclass
class PriorTransformerConfig(TransformerConfig, PriorOutputConfig):
    """fairseq's ``TransformerConfig`` plus the Prior-Network options (:class:`PriorOutputConfig`)."""


class PriorTransformerDecoder(PriorOutputLayerMixin, TransformerDecoder):
    """Transformer decoder with a LayerNorm on the features right before the output projection."""

    def __init__(self, args, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None):
        super().__init__(
            args, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn, output_projection=output_projection
        )
        self.add_prior_output_layernorm(args)


@register_model("prior_transformer")
class PriorTransformerModel(PriorNetworkMixin, TransformerModel):
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
        check_prior_args(args)
        return super().build_model(args, task)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        return PriorTransformerDecoder(
            args, tgt_dict, embed_tokens, no_encoder_attn=getattr(args, "no_cross_attention", False)
        )


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
