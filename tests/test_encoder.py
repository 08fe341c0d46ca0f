"""The w2v-BERT 2.0 encoder wrapper (Eq. 1) and LoRA (Eq. 4)."""

import pytest
import torch
from transformers import Wav2Vec2BertModel

from svlib.model.encoder import (
    LoRAConfig,
    W2VBertEncoder,
    build_hf_encoder,
    encoder_config,
    lora_param_count,
)


def tiny(**overrides):
    return W2VBertEncoder.from_name_or_path("tiny", conformer_conv_dropout=0.0, **overrides).eval()


def test_full_config_parameter_count_is_the_papers_580M():
    """The released model has 580,493,120 parameters; svlib drops the 1,024 of SpecAugment's masked_spec_embed."""
    enc = W2VBertEncoder.from_name_or_path("w2v-bert-2.0", meta=True)
    assert sum(p.numel() for p in enc.parameters()) == 580_492_096
    with torch.device("meta"):
        released = Wav2Vec2BertModel(encoder_config("w2v-bert-2.0"))
    assert sum(p.numel() for p in released.parameters()) == 580_493_120 == 580_492_096 + 1024
    assert enc.num_states == 25 and enc.hidden_size == 1024


SIZE_FIELDS = {"hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "output_hidden_size"}


def test_tiny_config_mirrors_every_structural_switch_of_the_released_config():
    """`tiny` differs from w2v-bert-2.0 only in sizes, so fast tests see what full-size runs see (the released
    config's mask_time_prob 0.05 once hid a DDP crash from tests on a tiny config with 0.0)."""
    tiny_cfg, full_cfg = encoder_config("tiny").to_dict(), encoder_config("w2v-bert-2.0").to_dict()
    assert tiny_cfg.keys() == full_cfg.keys()
    differing = {k for k in full_cfg if tiny_cfg[k] != full_cfg[k]} - {"transformers_version"}
    assert differing == SIZE_FIELDS
    assert full_cfg["mask_time_prob"] == tiny_cfg["mask_time_prob"] == 0.05 and not tiny_cfg["apply_spec_augment"]


def test_every_trainable_parameter_gets_a_gradient(tmp_path):
    """DDP (find_unused_parameters=False) needs a gradient for every trainable parameter: built from the named
    config, from a checkpoint directory whose weights hold masked_spec_embed, and on the meta device."""
    hf = Wav2Vec2BertModel(encoder_config("tiny"))
    assert hf.masked_spec_embed is not None  # transformers creates it (mask_time_prob > 0)
    hf.save_pretrained(tmp_path)
    for enc in (tiny(), W2VBertEncoder(build_hf_encoder(tmp_path)), W2VBertEncoder.from_name_or_path("tiny", meta=True)):
        assert not any(name.endswith("masked_spec_embed") for name, _ in enc.named_parameters())
    enc = tiny().train().freeze(False)
    enc(torch.randn(2, 13, 160)).square().mean().backward()
    no_grad = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []


def test_hidden_states_are_stacked_projection_plus_layers():
    enc = tiny()
    x = torch.randn(2, 17, 160)
    hs = enc(x)
    cfg = enc.config
    assert hs.shape == (cfg.num_hidden_layers + 1, 2, 17, cfg.hidden_size)
    # h_0 is the feature projection's output, h_L the last layer's output
    ref = enc.hf_model(x, output_hidden_states=True)
    torch.testing.assert_close(hs[0], enc.hf_model.feature_projection(x)[0])
    torch.testing.assert_close(hs[-1], ref.last_hidden_state)


def test_bad_input_shape_names_expected_and_found():
    with pytest.raises(ValueError, match=r"\(batch, frames, 160\), found \(2, 17, 80\)"):
        tiny()(torch.randn(2, 17, 80))


def test_unknown_encoder_name_and_override_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a named config"):
        encoder_config("w2v-bert-3.0")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        encoder_config(tmp_path)
    with pytest.raises(ValueError, match="not a Wav2Vec2BertConfig field"):
        encoder_config("tiny", hidden_sise=3)


def test_local_checkpoint_directory_loads_offline(tmp_path):
    hf = Wav2Vec2BertModel(encoder_config("tiny")).eval()
    hf.save_pretrained(tmp_path)
    loaded = build_hf_encoder(tmp_path).eval()
    x = torch.randn(1, 11, 160)
    torch.testing.assert_close(loaded(x).last_hidden_state, hf(x).last_hidden_state)


def test_freeze_and_gradient_checkpointing_give_the_same_gradients():
    torch.manual_seed(1)
    a = tiny().train()
    b = tiny().train()
    b.load_state_dict(a.state_dict())
    b.gradient_checkpointing(True)
    x = torch.randn(2, 13, 160)
    a(x).square().mean().backward()
    b(x).square().mean().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, msg=n)
    a.freeze()
    assert not any(p.requires_grad for p in a.parameters())
    a.freeze(False)
    assert all(p.requires_grad for p in a.parameters())


def test_lora_parameter_count_full_size():
    enc = W2VBertEncoder.from_name_or_path("w2v-bert-2.0", meta=True).add_lora(LoRAConfig())
    n = sum(p.numel() for p in enc.lora_parameters())
    assert n == lora_param_count(enc.config, LoRAConfig()) == 6_291_456
    assert all("lora_" in name for name, p in enc.model.named_parameters() if p.requires_grad)


def _perturb_lora(enc):
    with torch.no_grad():
        for name, p in enc.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)


def test_lora_starts_as_identity_and_merge_matches_unmerged():
    enc = tiny()
    x = torch.randn(2, 19, 160)
    base = enc(x)
    enc.add_lora(LoRAConfig(r=4, alpha=8))
    torch.testing.assert_close(enc(x), base)  # lora_B = 0 at start
    _perturb_lora(enc)
    unmerged = enc(x)
    assert (unmerged - base).abs().max() > 1e-3, "the perturbed LoRA must change the output"
    enc.merge_lora()
    assert enc.lora is None and not enc.lora_parameters()
    assert isinstance(enc.model, Wav2Vec2BertModel)
    torch.testing.assert_close(enc(x), unmerged, atol=1e-5, rtol=1e-5)


def test_merged_weight_is_eq4():
    """W' = W + (α/r)·A·B, computed independently from the LoRA factors."""
    enc = tiny()
    w0 = enc.hf_model.encoder.layers[1].self_attn.linear_v.weight.detach().clone()
    lora = LoRAConfig(r=4, alpha=12)
    enc.add_lora(lora)
    _perturb_lora(enc)
    with torch.no_grad():
        for name, p in enc.model.named_parameters():
            if "lora_A" in name:
                p.normal_(0, 0.05)
    layer = enc.hf_model.encoder.layers[1].self_attn.linear_v
    a = layer.lora_A["default"].weight.detach().clone()  # (r, d_in)
    b = layer.lora_B["default"].weight.detach().clone()  # (d_out, r)
    enc.merge_lora()
    merged = enc.hf_model.encoder.layers[1].self_attn.linear_v.weight
    torch.testing.assert_close(merged, w0 + (lora.alpha / lora.r) * b @ a)


def test_lora_config_validation():
    with pytest.raises(ValueError, match="LoRAConfig.r"):
        LoRAConfig(r=0)
    with pytest.raises(ValueError, match="LoRAConfig.dropout"):
        LoRAConfig(dropout=1.5)
