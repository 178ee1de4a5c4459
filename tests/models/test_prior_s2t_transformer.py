"""The speech Prior Network (prior_s2t_transformer): registration, dimensions, shapes, the LayerNorm before the
output projection, incremental decoding, options."""
import pytest
import torch

from fairseq import tasks

from fairseq_helpers import assert_dirichlet_read_out, assert_incremental_decoding_matches, build_s2t_cfg
from proxy_end2.models.prior_s2t_transformer import PriorS2TTransformerDecoder, PriorS2TTransformerModel
from speech_data import TINY_S2T_MODEL


def _build(data, *extra):
    cfg = build_s2t_cfg(data, ["--task", "speech_to_text", "--arch", "prior_s2t_transformer_xs", *TINY_S2T_MODEL,
                               *extra])
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model)


def _batch(task, bsz=3, frames=40, tgt_len=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(bsz, frames, 80, generator=g)
    lengths = torch.tensor([frames, frames - 7, frames - 13])[:bsz]
    prev = torch.randint(task.target_dictionary.nspecial, len(task.target_dictionary), (bsz, tgt_len), generator=g)
    prev[:, 0] = task.target_dictionary.eos()
    return {"src_tokens": feats, "src_lengths": lengths, "prev_output_tokens": prev}


@pytest.mark.parametrize("arch, dims", [
    ("prior_s2t_transformer_xs", (256, 6, 3, 1024, 0.3)),
    ("prior_s2t_transformer_s", (256, 12, 6, 2048, 0.1)),
    ("prior_s2t_transformer_m", (512, 12, 6, 2048, 0.15)),
])
def test_architectures_are_fairseqs_s2t_ones(tiny_s2t_data, arch, dims):
    cfg = build_s2t_cfg(tiny_s2t_data, ["--task", "speech_to_text", "--arch", arch])
    m = cfg.model
    assert (m.encoder_embed_dim, m.encoder_layers, m.decoder_layers, m.encoder_ffn_embed_dim, m.dropout) == dims
    assert m.model_offset == 1.0 and m.no_prior_output_layernorm is False
    assert m.decoder_normalize_before is True  # pre-norm: the decoder ends in a LayerNorm


def test_forward_shapes_and_dirichlet(tiny_s2t_data):
    torch.manual_seed(0)
    task, model = _build(tiny_s2t_data, "--model-offset", "0.5")
    assert isinstance(model, PriorS2TTransformerModel) and isinstance(model.decoder, PriorS2TTransformerDecoder)
    model.eval()
    logits, extra = model(**_batch(task))
    assert logits.shape == (3, 5, len(task.target_dictionary))
    assert_dirichlet_read_out(model, logits, extra, 0.5)


def test_layernorm_is_applied_right_before_output_projection(tiny_s2t_data):
    torch.manual_seed(0)
    task, model = _build(tiny_s2t_data, "--share-decoder-input-output-embed")
    model.eval()
    batch = _batch(task)
    decoder = model.decoder
    encoder_out = model.encoder(batch["src_tokens"], batch["src_lengths"])
    features, _ = decoder.extract_features(batch["prev_output_tokens"], encoder_out=encoder_out)
    ln = decoder.prior_output_layernorm
    expected = torch.nn.functional.layer_norm(features, features.shape[-1:], ln.weight, ln.bias) \
        @ decoder.output_projection.weight.t()
    torch.testing.assert_close(model(**batch)[0], expected)
    assert "decoder.prior_output_layernorm.weight" in dict(model.named_parameters())
    # the feature LayerNorm that --student-init hands over is the pre-norm decoder's final one
    assert decoder.feature_layernorm() is decoder.layer_norm


def test_layernorm_can_be_switched_off(tiny_s2t_data):
    torch.manual_seed(0)
    task, model = _build(tiny_s2t_data, "--no-prior-output-layernorm")
    model.eval()
    assert model.decoder.prior_output_layernorm is None
    batch = _batch(task)
    encoder_out = model.encoder(batch["src_tokens"], batch["src_lengths"])
    features, _ = model.decoder.extract_features(batch["prev_output_tokens"], encoder_out=encoder_out)
    torch.testing.assert_close(model(**batch)[0], features @ model.decoder.output_projection.weight.t())
    assert not model.decoder.take_over_feature_layernorm_affine()


def test_incremental_decoding_matches_full_forward(tiny_s2t_data):
    """Beam search decodes incrementally: the LayerNorm must not break that."""
    torch.manual_seed(0)
    task, model = _build(tiny_s2t_data)
    model.eval()
    batch = _batch(task, bsz=2, tgt_len=4)
    enc = model.encoder(batch["src_tokens"], batch["src_lengths"])
    assert_incremental_decoding_matches(model, batch, enc, steps=4)


def test_take_over_keeps_the_function(tiny_s2t_data):
    """Moving the final decoder LayerNorm's affine into the output LayerNorm makes the Prior Network compute
    the plain S2T model it was loaded from (logits = W features, no output LayerNorm) up to the LayerNorm's eps."""
    torch.manual_seed(0)
    task, model = _build(tiny_s2t_data)
    model.eval()
    decoder = model.decoder
    with torch.no_grad():  # a non-trivial final decoder LayerNorm, as a trained model has
        decoder.layer_norm.weight.uniform_(0.5, 2.0)
        decoder.layer_norm.bias.normal_(0, 0.5)
    batch = _batch(task)
    encoder_out = model.encoder(batch["src_tokens"], batch["src_lengths"])
    features, _ = decoder.extract_features(batch["prev_output_tokens"], encoder_out=encoder_out)
    plain = torch.log_softmax(decoder.output_projection(features), -1)  # what s2t_transformer computes
    assert decoder.take_over_feature_layernorm_affine()
    assert bool((decoder.layer_norm.weight == 1).all()) and bool((decoder.layer_norm.bias == 0).all())
    torch.testing.assert_close(model.get_normalized_probs(model(**batch), log_probs=True), plain,
                               rtol=1e-5, atol=1e-5)


def test_bad_options_are_rejected(tiny_s2t_data):
    with pytest.raises(ValueError, match="model-offset"):
        _build(tiny_s2t_data, "--model-offset", "-1")
