"""Prior-Network speech Transformer: fairseq's ``s2t_transformer`` whose logits parametrise a Dirichlet.

fairseq's speech-to-text Transformer (a convolutional subsampler of the filterbank frames, a pre-norm
Transformer encoder and decoder) with the Prior-Network output of :mod:`proxy_end2.models.prior_output`:
a LayerNorm on the decoder features right before the output projection (``--no-prior-output-layernorm`` to
drop it) and ``alpha_k = exp(z_k) + model_offset`` (``--model-offset``, default 1, stored with the model).
Beam search and the NLL use ``softmax(z)``, as for ``prior_transformer``.

Use it with ``--task speech_to_text_distillation`` (fairseq's ``speech_to_text`` data: filterbank features,
TSV manifests, ``config.yaml``); its teachers are ordinary ``s2t_transformer`` models trained on the same
data. Architectures: ``prior_s2t_transformer_xs`` (fairseq's ``s2t_transformer_xs``), ``_s`` and ``_m``.

fairseq's S2T decoder is pre-norm: it ends in a LayerNorm, so the output LayerNorm normalises features that
are already normalised and ``--student-init`` can start the student exactly at a teacher
(:meth:`~proxy_end2.models.prior_output.PriorOutputLayerMixin.take_over_feature_layernorm_affine`).
"""
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.speech_to_text.s2t_transformer import (
    S2TTransformerModel,
    TransformerDecoderScriptable,
    s2t_transformer_m,
    s2t_transformer_s,
    s2t_transformer_xs,
)

from .prior_output import (
    PriorNetworkMixin,
    PriorOutputConfig,
    PriorOutputLayerMixin,
    base_prior_architecture,
    check_prior_args,
)


class PriorS2TTransformerDecoder(PriorOutputLayerMixin, TransformerDecoderScriptable):
    """fairseq's S2T Transformer decoder with a LayerNorm on the features right before the output projection."""

    def __init__(self, args, dictionary, embed_tokens):
        super().__init__(args, dictionary, embed_tokens)
        self.add_prior_output_layernorm(args)


@register_model("prior_s2t_transformer")
class PriorS2TTransformerModel(PriorNetworkMixin, S2TTransformerModel):
    """A speech Transformer Prior Network (see the module docstring).

    ``forward(src_tokens [B, T_in, 80] float, src_lengths [B], prev_output_tokens [B, T])`` returns logits
    [B, T, K] and the decoder's extra outputs, as ``s2t_transformer``.
    """

    @staticmethod
    def add_args(parser):
        """``s2t_transformer``'s options plus :class:`~proxy_end2.models.prior_output.PriorOutputConfig`'s
        (no defaults here, so that the architectures' defaults apply)."""
        S2TTransformerModel.add_args(parser)
        gen_parser_from_dataclass(parser, PriorOutputConfig(), delete_default=True)

    @classmethod
    def build_decoder(cls, args, task, embed_tokens):
        return PriorS2TTransformerDecoder(args, task.target_dictionary, embed_tokens)

    @classmethod
    def build_model(cls, args, task):
        base_prior_architecture(args)
        check_prior_args(args)
        model = super().build_model(args, task)
        model.args = args  # fairseq's S2T model keeps no args; the Prior Network reads its model offset there
        return model


@register_model_architecture("prior_s2t_transformer", "prior_s2t_transformer_xs")
def prior_s2t_transformer_xs(args):
    """fairseq's ``s2t_transformer_xs`` (256-dim, 6 encoder and 3 decoder layers): small data and tests."""
    s2t_transformer_xs(args)
    base_prior_architecture(args)


@register_model_architecture("prior_s2t_transformer", "prior_s2t_transformer_s")
def prior_s2t_transformer_s(args):
    """fairseq's ``s2t_transformer_s`` (256-dim, 12 encoder and 6 decoder layers): the model of fairseq's
    LibriSpeech recipe."""
    s2t_transformer_s(args)
    base_prior_architecture(args)


@register_model_architecture("prior_s2t_transformer", "prior_s2t_transformer_m")
def prior_s2t_transformer_m(args):
    """fairseq's ``s2t_transformer_m`` (512-dim, 12 encoder and 6 decoder layers)."""
    s2t_transformer_m(args)
    base_prior_architecture(args)
