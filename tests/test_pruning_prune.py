"""Gated (masked) model ≡ physically pruned model, and the gated model in training mode."""

import pytest
import torch
from torch import nn

from svlib.model.encoder import build_hf_encoder
from svlib.model.resize import build_pruned_encoder, prune_convolution
from svlib.pruning import GatedChannelNorm, GatedW2VBertEncoder, HardConcrete

SMALL = {"hidden_size": 48, "num_attention_heads": 3, "intermediate_size": 40, "num_hidden_layers": 3,
         "conv_depthwise_kernel_size": 5}


def _randomised_student(overrides: dict, seed: int) -> GatedW2VBertEncoder:
    """A gated student with random log α, one layer each with an empty FFN, attention and conv module."""
    torch.manual_seed(seed)
    student = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny", **overrides))
    with torch.no_grad():
        for gates in student.gates():
            for gate in gates.values():
                gate.log_alpha.normal_(0.5, 3.0)
        gates = student.gates()
        n = len(gates)
        gates[0]["ffn2"].log_alpha.fill_(-8.0)
        gates[1 % n]["attention"].log_alpha.fill_(-8.0)
        gates[2 % n]["conv"].log_alpha.fill_(-8.0)
        gates[n - 1]["ffn1"].log_alpha.fill_(-8.0)
    return student.eval()


def _padded_batch(seed: int):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 37, 160, generator=generator)
    mask = torch.ones(3, 37, dtype=torch.long)
    mask[1, 25:] = 0
    mask[2, 9:] = 0
    return features, mask


@pytest.mark.parametrize("overrides", [{}, SMALL], ids=["tiny", "small"])
@pytest.mark.parametrize("seed", [0, 1])
def test_masked_equals_pruned(overrides, seed):
    student = _randomised_student(overrides, seed)
    structure = student.structure()
    assert 0 in structure.heads and 0 in structure.conv and any(0 in pair for pair in structure.ffn)
    masks = student.deterministic_masks()
    assert any(((m > 0) & (m < 1)).any() for layer in masks for m in layer.values())  # folding is exercised
    features, mask = _padded_batch(seed)
    with torch.no_grad():
        masked = student(features, mask)
        masked_unpadded = student(features[:1])
        pruned = student.prune_()
        pruned.eval()
        out = pruned(features, mask)
        out_unpadded = pruned(features[:1])
    assert out.shape == masked.shape == (student.config.num_hidden_layers + 1, 3, 37, student.hidden_size)
    valid = mask.bool()[None, :, :, None].expand_as(out)
    assert (out - masked)[valid].abs().max().item() <= 1e-4
    assert (out_unpadded - masked_unpadded).abs().max().item() <= 1e-4
    # the pruned shapes are the structure, and the pruned model no longer carries gates
    assert not any("log_alpha" in n for n, _ in pruned.model.named_parameters())
    layers = pruned.model.encoder.layers
    for layer, (f1, f2), heads, channels in zip(layers, structure.ffn, structure.heads, structure.conv):
        for ffn, units in (("ffn1", f1), ("ffn2", f2)):
            module = getattr(layer, ffn)
            assert (module.intermediate_dense.out_features if units else 0) == units
        assert (layer.self_attn.linear_q.out_features // layer.self_attn.head_size if heads else 0) == heads
        assert (layer.conv_module.depthwise_conv.groups if channels else 0) == channels


def test_pruned_model_rebuilds_from_its_config():
    """The pruned config carries the structure: build_pruned_encoder(config) + load_state_dict(strict) restores it."""
    student = _randomised_student({}, 3)
    pruned = student.prune_().model
    rebuilt = build_pruned_encoder(pruned.config.to_dict())
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    features, mask = _padded_batch(3)
    with torch.no_grad():
        a = pruned.eval()(features, mask, output_hidden_states=True).hidden_states
        b = rebuilt.eval()(features, mask, output_hidden_states=True).hidden_states
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_prune_requires_eval_and_happens_once():
    student = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"))
    with pytest.raises(RuntimeError, match="eval"):
        student.train().prune_()
    pruned = student.eval().prune_()
    with pytest.raises(RuntimeError, match="pruned"):
        student.expected_params()
    with pytest.raises(ValueError, match="already pruned"):
        GatedW2VBertEncoder(pruned.model)


def test_teacher_is_untouched_and_lora_is_refused():
    from svlib.model.encoder import LoRAConfig, W2VBertEncoder

    teacher = W2VBertEncoder(build_hf_encoder("tiny"))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = GatedW2VBertEncoder.from_encoder(teacher)
    student.eval().prune_()
    after = teacher.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # the student's weights keep transformers' names: the teacher's state dict loads into a fresh student
    fresh = GatedW2VBertEncoder.from_encoder(teacher)
    result = fresh.model.load_state_dict(teacher.model.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(k.endswith("gate.log_alpha") for k in result.missing_keys)
    with pytest.raises(ValueError, match="merge"):
        GatedW2VBertEncoder.from_encoder(W2VBertEncoder(build_hf_encoder("tiny")).add_lora(LoRAConfig(r=2)))


def test_conv_pruning_folds_gate_values():
    """Pruning without folding the (< 1) gate values into pointwise_conv2 would change the output."""
    torch.manual_seed(4)
    student = _randomised_student({}, 4)
    layer = student.model.encoder.layers[0]
    conv_gate = layer.conv_module.depthwise_layer_norm.gate
    mask = conv_gate.deterministic_mask()
    assert ((mask > 0) & (mask < 1)).any()
    x = torch.randn(2, 21, student.hidden_size)
    import copy

    folded, unfolded = copy.deepcopy(layer), copy.deepcopy(layer)
    index = mask.nonzero().squeeze(1)
    with torch.no_grad():
        reference = layer.conv_module(x)
        prune_convolution(folded, index, mask[index])
        prune_convolution(unfolded, index, None)
        assert (folded.conv_module.eval()(x) - reference).abs().max() <= 1e-5
        assert (unfolded.conv_module.eval()(x) - reference).abs().max() > 1e-3


def test_channel_norm_uses_kept_channels_only():
    """With a 0/1 gate the norm equals ``LayerNorm`` over the kept channels (training and eval)."""
    torch.manual_seed(5)
    channels = 12
    norm = nn.LayerNorm(channels)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    gate = HardConcrete(channels)
    z = (torch.arange(channels) % 3 != 0).float()
    gate.forward = lambda: z  # a fixed 0/1 sample
    gated = GatedChannelNorm(norm, nn.SiLU(), gate)
    x = 3 * torch.randn(2, 5, channels) + 1
    kept = z.bool()
    reference = nn.functional.silu(
        nn.functional.layer_norm(x[..., kept], (int(kept.sum()),), norm.weight[kept], norm.bias[kept], norm.eps)
    )
    for mode in (True, False):
        y = gated.train(mode)(x)
        assert torch.allclose(y[..., kept], reference, atol=1e-5)
        assert torch.equal(y[..., ~kept], torch.zeros_like(y[..., ~kept]))


def test_training_mode_samples_and_backpropagates():
    torch.manual_seed(6)
    student = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"))
    student.train()
    features, mask = _padded_batch(6)
    a = student(features, mask)
    b = student(features, mask)
    assert not torch.allclose(a, b)  # fresh gate samples each forward
    a.square().mean().backward()
    assert all(p.grad is not None for p in student.log_alpha_parameters())
    assert all(torch.isfinite(p.grad).all() for p in student.log_alpha_parameters())


def _authors_state_shapes(structure: dict, non_layer: dict[str, tuple]) -> dict[str, tuple]:
    """Key → shape of a pruned encoder in the authors' layout, built from the structure dict alone.

    Mirrors the authors' ``Wav2Vec2BertEncoderLayer``: an FFN with ``use_feed_forward`` false has neither its
    ``ffnN`` nor its ``ffnN_layer_norm``; an attention with ``use_attention`` false has neither ``self_attn``
    (``linear_q/k/v/out``, ``distance_embedding``) nor ``self_attn_layer_norm``. ``non_layer``: the keys outside
    ``encoder.layers`` (feature projection, …), which pruning does not touch.
    """
    d = structure["hidden_size"]
    head = d // structure["num_attention_heads"]
    kernel = structure["conv_depthwise_kernel_size"]
    positions = structure["left_max_position_embeddings"] + structure["right_max_position_embeddings"] + 1
    shapes = dict(non_layer)
    for i, (ffn, use_ffn, heads, use_attn, (conv_in, conv)) in enumerate(zip(
            structure["intermediate_size_group"], structure["use_feed_forward"],
            structure["num_attention_heads_group"], structure["use_attention"], structure["conv_group"])):
        p = f"encoder.layers.{i}."
        for n, (units, used) in enumerate(zip(ffn, use_ffn), start=1):
            if used:
                shapes.update({f"{p}ffn{n}_layer_norm.weight": (d,), f"{p}ffn{n}_layer_norm.bias": (d,),
                               f"{p}ffn{n}.intermediate_dense.weight": (units, d),
                               f"{p}ffn{n}.intermediate_dense.bias": (units,),
                               f"{p}ffn{n}.output_dense.weight": (d, units), f"{p}ffn{n}.output_dense.bias": (d,)})
        if use_attn:
            shapes.update({f"{p}self_attn_layer_norm.weight": (d,), f"{p}self_attn_layer_norm.bias": (d,),
                           f"{p}self_attn.linear_out.weight": (d, heads * head), f"{p}self_attn.linear_out.bias": (d,),
                           f"{p}self_attn.distance_embedding.weight": (positions, head)})
            for proj in ("linear_q", "linear_k", "linear_v"):
                shapes.update({f"{p}self_attn.{proj}.weight": (heads * head, d),
                               f"{p}self_attn.{proj}.bias": (heads * head,)})
        shapes.update({f"{p}conv_module.layer_norm.weight": (conv_in,), f"{p}conv_module.layer_norm.bias": (conv_in,),
                       f"{p}conv_module.pointwise_conv1.weight": (2 * conv, conv_in, 1),
                       f"{p}conv_module.depthwise_conv.weight": (conv, 1, kernel),
                       f"{p}conv_module.depthwise_layer_norm.weight": (conv,),
                       f"{p}conv_module.depthwise_layer_norm.bias": (conv,),
                       f"{p}conv_module.pointwise_conv2.weight": (conv_in, conv, 1),
                       f"{p}final_layer_norm.weight": (d,), f"{p}final_layer_norm.bias": (d,)})
    return shapes


def test_removed_blocks_have_no_parameters_as_in_the_authors_checkpoints(tmp_path):
    """A block pruned to zero units (authors' ``use_attention: false`` / ``use_feed_forward: false``) has no
    parameters at all, its output bias included: the pruned model loads a state dict in the authors' layout strictly,
    still computes what the gated model computes, and survives save / load_model."""
    from svlib.model import SpeakerModel, load_model

    torch.manual_seed(8)
    model = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    model.encoder = GatedW2VBertEncoder(model.encoder.hf_model)
    student = model.encoder
    with torch.no_grad():
        for gates in student.gates():
            for gate in gates.values():
                gate.log_alpha.normal_(1.0, 2.0)
            gates["conv"].log_alpha[:4].fill_(6.0)  # the authors never remove a conv module
        student.gates()[1]["attention"].log_alpha.fill_(-8.0)  # use_attention false in layer 2
        student.gates()[2]["ffn2"].log_alpha.fill_(-8.0)  # use_feed_forward [true, false] in layer 3
        for layer in student.model.encoder.layers:  # large output biases, so that a kept or lost bias shows
            for linear in (layer.self_attn.linear_out, layer.ffn1.output_dense, layer.ffn2.output_dense):
                linear.bias.normal_(0.0, 1.0)
    student.eval()
    features, mask = _padded_batch(8)
    with torch.no_grad():
        masked = student(features, mask)
        model.encoder = student.prune_()
        pruned = model.encoder.eval()(features, mask)
    d = model.encoder.config.to_dict()
    assert d["use_attention"][1] is False and d["use_feed_forward"][2] == [True, False]
    assert sum(d["use_attention"]) == 3 and sum(map(sum, d["use_feed_forward"])) == 7  # only those two removed

    # (1) no key for the removed blocks
    keys = set(model.encoder.model.state_dict())
    for prefix in ("encoder.layers.1.self_attn.", "encoder.layers.1.self_attn_layer_norm.",
                   "encoder.layers.2.ffn2.", "encoder.layers.2.ffn2_layer_norm."):
        assert not any(k.startswith(prefix) for k in keys), prefix
    # (2) the key set and shapes of the authors' layout, built from the structure alone, load strictly
    state = model.encoder.model.state_dict()
    non_layer = {k: tuple(v.shape) for k, v in state.items() if not k.startswith("encoder.layers.")}
    expected = _authors_state_shapes(d, non_layer)
    assert keys == set(expected)
    authors_state = {k: torch.randn(shape) for k, shape in expected.items()}
    model.encoder.model.load_state_dict(authors_state, strict=True)
    # (3) masked == pruned (computed before loading the random state above)
    valid = mask.bool()[None, :, :, None].expand_as(pruned)
    assert (pruned - masked)[valid].abs().max().item() <= 1e-5
    # (4) a saved pruned speaker model round-trips through load_model (strict)
    model.save(tmp_path / "pruned")
    loaded = load_model(tmp_path / "pruned")
    assert set(loaded.encoder.model.state_dict()) == keys
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded.encoder(features, mask), model.encoder(features, mask))
