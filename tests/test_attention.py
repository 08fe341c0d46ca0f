"""svlib.model.attention: the looked-up relative-key bias against transformers' own computation, and that every
encoder svlib builds, loads, gates, prunes or adapts uses it."""

import copy

import pytest
import torch
from transformers import Wav2Vec2BertModel
from transformers.models.wav2vec2_bert import modeling_wav2vec2_bert as hf

from svlib.model import SpeakerModel, load_model
from svlib.model.attention import RelativeKeySelfAttention, relative_key_bias, use_lookup_position_bias
from svlib.model.encoder import encoder_config
from svlib.model.resize import build_pruned_encoder
from svlib.model.structure import PrunedStructure
from svlib.pruning import GatedW2VBertEncoder


def _attention(seed=0):
    torch.manual_seed(seed)
    config = encoder_config("tiny")
    module = hf.Wav2Vec2BertSelfAttention(config)
    torch.nn.init.normal_(module.distance_embedding.weight)
    return module


@pytest.mark.parametrize("frames", [1, 40, 73, 74, 300])
def test_the_lookup_bias_is_transformers_bias(frames):
    """Both sides of the switch at T = P = 73, against transformers' _apply_relative_key_position_encoding."""
    module = _attention()
    query = torch.randn(2, 4, frames, module.head_size, dtype=torch.float64)
    key = torch.randn_like(query)
    module = module.double()
    _, expected = hf._apply_relative_key_position_encoding(module, query, key)
    found = relative_key_bias(query, module.distance_embedding.weight, module.left_max_position_embeddings,
                              module.right_max_position_embeddings) * module.scaling
    torch.testing.assert_close(found, expected, rtol=1e-12, atol=1e-12)


def test_the_lookup_bias_has_transformers_gradients():
    module = _attention(1).double()
    table = module.distance_embedding.weight
    query = torch.randn(1, 2, 150, module.head_size, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, 2, 150, 150, dtype=torch.float64)
    grads = []
    for bias in (lambda: hf._apply_relative_key_position_encoding(module, query, query)[1] / module.scaling,
                 lambda: relative_key_bias(query, table, 64, 8)):
        (bias() * weights).sum().backward()
        grads.append((query.grad.clone(), table.grad.clone()))
        query.grad, table.grad = None, None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("frames", [50, 300])
def test_an_encoder_with_the_lookup_computes_transformers_hidden_states(frames):
    torch.manual_seed(0)
    config = encoder_config("tiny")
    reference = Wav2Vec2BertModel(config).eval()
    ours = use_lookup_position_bias(copy.deepcopy(reference)).eval()
    assert all(type(layer.self_attn) is RelativeKeySelfAttention for layer in ours.encoder.layers)
    assert all(type(layer.self_attn) is hf.Wav2Vec2BertSelfAttention for layer in reference.encoder.layers)
    x = torch.randn(2, frames, 160)
    mask = torch.ones(2, frames, dtype=torch.long)
    mask[1, frames // 2:] = 0
    with torch.no_grad():
        a = reference(x, attention_mask=mask, output_hidden_states=True).hidden_states
        b = ours(x, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer, (u, v) in enumerate(zip(a, b)):
        torch.testing.assert_close(v, u, rtol=1e-5, atol=1e-5, msg=f"hidden state {layer}")


def test_every_encoder_svlib_makes_uses_the_lookup(tmp_path):
    def attention_types(encoder):
        return {type(m) for m in encoder.modules() if isinstance(m, hf.Wav2Vec2BertSelfAttention)}

    torch.manual_seed(0)
    model = SpeakerModel.build("tiny", head="adapter_mfa")
    model.save(tmp_path / "m")
    structure = PrunedStructure(ffn=[(10, 20), (0, 3), (16, 13), (4, 0)], heads=[1, 0, 2, 4], conv=[9, 20, 0, 64],
                                config=model.encoder.config.to_dict())
    lora = SpeakerModel.build("tiny", head="adapter_mfa")
    lora.encoder.add_lora()
    for name, encoder in {
        "built": model.encoder,
        "loaded": load_model(tmp_path / "m").encoder,
        "meta": SpeakerModel.build("w2v-bert-2.0", meta=True).encoder,
        "pruned": build_pruned_encoder(structure),
        "gated": GatedW2VBertEncoder.from_encoder(model.encoder),
        "with LoRA": lora.encoder,
    }.items():
        assert attention_types(encoder) == {RelativeKeySelfAttention}, name
