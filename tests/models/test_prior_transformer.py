"""The Prior-Network Transformer: registration, shapes, the LayerNorm before the output projection."""
import pytest
import torch


from fairseq_helpers import assert_dirichlet_read_out, assert_incremental_decoding_matches, build_task_and_model
from proxy_end2.models.prior_transformer import PriorTransformerDecoder, PriorTransformerModel

ARCHS = ("prior_transformer_tiny", "prior_transformer", "prior_transformer_wmt_en_de", "prior_transformer_wmt_en_de_big")


def _batch(task, bsz=3, src_len=7, tgt_len=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    nspecial = task.source_dictionary.nspecial
    src = torch.randint(nspecial, len(task.source_dictionary), (bsz, src_len), generator=g)
    prev = torch.randint(nspecial, len(task.target_dictionary), (bsz, tgt_len), generator=g)
    prev[:, 0] = task.target_dictionary.eos()
    return {"src_tokens": src, "src_lengths": torch.full((bsz,), src_len), "prev_output_tokens": prev}


def test_wmt_en_de_big_dimensions(tiny_data):
    # characteristic numbers of transformer_wmt_en_de_big; build only the config, not the 200M-parameter model
    from fairseq_helpers import build_cfg

    cfg = build_cfg(tiny_data, ["--task", "translation", "--arch", "prior_transformer_wmt_en_de_big"])
    assert cfg.model.encoder_embed_dim == 1024 and cfg.model.decoder_ffn_embed_dim == 4096
    assert cfg.model.decoder_attention_heads == 16 and cfg.model.attention_dropout == 0.1
    assert cfg.model.model_offset == 1.0 and cfg.model.no_prior_output_layernorm is False


def test_forward_shapes_and_dirichlet(tiny_data):
    torch.manual_seed(0)
    _, task, model = build_task_and_model(tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny",
                                                      "--model-offset", "0.5"])
    model.eval()
    batch = _batch(task)
    logits, extra = model(**batch)
    assert logits.shape == (3, 5, len(task.target_dictionary))
    assert_dirichlet_read_out(model, logits, extra, 0.5)


def test_layernorm_is_applied_right_before_output_projection(tiny_data):
    torch.manual_seed(0)
    _, task, model = build_task_and_model(tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny"])
    model.eval()
    decoder = model.decoder
    assert isinstance(decoder, PriorTransformerDecoder)
    assert decoder.prior_output_layernorm is not None
    batch = _batch(task)
    features, _ = model(**batch, features_only=True)
    normed = torch.nn.functional.layer_norm(features, features.shape[-1:], decoder.prior_output_layernorm.weight,
                                            decoder.prior_output_layernorm.bias)
    expected = normed @ decoder.output_projection.weight.t()
    logits, _ = model(**batch)
    torch.testing.assert_close(logits, expected)
    # and it is a trained parameter of the model
    names = [n for n, _ in model.named_parameters()]
    assert "decoder.prior_output_layernorm.weight" in names


def test_layernorm_can_be_switched_off(tiny_data):
    torch.manual_seed(0)
    _, task, model = build_task_and_model(
        tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny", "--no-prior-output-layernorm"])
    model.eval()
    assert model.decoder.prior_output_layernorm is None
    batch = _batch(task)
    features, _ = model(**batch, features_only=True)
    logits, _ = model(**batch)
    torch.testing.assert_close(logits, features @ model.decoder.output_projection.weight.t())


def test_incremental_decoding_matches_full_forward(tiny_data):
    """Beam search decodes incrementally: the LayerNorm must not break that."""
    torch.manual_seed(0)
    _, task, model = build_task_and_model(tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny"])
    model.eval()
    batch = _batch(task, bsz=2, tgt_len=4)
    enc = model.encoder(batch["src_tokens"], src_lengths=batch["src_lengths"])
    assert_incremental_decoding_matches(model, batch, enc, steps=4)


def test_bad_options_are_rejected(tiny_data):
    with pytest.raises(ValueError, match="model-offset"):
        build_task_and_model(tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny",
                                         "--model-offset", "-1"])
    with pytest.raises(ValueError, match="adaptive-softmax"):
        build_task_and_model(tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny",
                                         "--adaptive-softmax-cutoff", "10,20"])


def test_state_dict_round_trip(tiny_data):
    torch.manual_seed(0)
    _, task, model = build_task_and_model(tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny"])
    torch.manual_seed(1)
    _, _, other = build_task_and_model(tiny_data, ["--task", "translation", "--arch", "prior_transformer_tiny"])
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    batch = _batch(task)
    torch.testing.assert_close(model(**batch)[0], other(**batch)[0])
