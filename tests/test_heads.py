"""Tests for svlib.model.heads: exact parameter counts (paper Table 2 / RECIPE.md), shapes, masking, gradients."""

from __future__ import annotations

import pytest
import torch

from svlib.model.heads import (
    AdapterMFAHead,
    AttentiveStatisticsPooling,
    HeadConfig,
    LayerWeightedAverage,
    MFAHead,
    SqueezeExcitation,
    WeightedAverageECAPAHead,
    build_head,
)

FULL_SIZE_PARAMS = {"wavg_ecapa": 8_807_385, "mfa": 65_564_928, "adapter_mfa": 6_160_640}
HEAD_CLASSES = {"wavg_ecapa": WeightedAverageECAPAHead, "mfa": MFAHead, "adapter_mfa": AdapterMFAHead}


def small_config(head_type: str) -> HeadConfig:
    return HeadConfig(
        type=head_type,
        num_states=5,
        hidden_size=32,
        embed_dim=16,
        adapter_dim=8,
        ecapa_channels=32,
        ecapa_attention_channels=8,
        ecapa_se_channels=8,
        ecapa_scale=8,
    )


def randomise_batchnorm_stats(module: torch.nn.Module) -> None:
    """Give every BatchNorm non-trivial running statistics so eval mode is a real test."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            sub.running_mean.uniform_(-0.5, 0.5)
            sub.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("head_type", sorted(FULL_SIZE_PARAMS))
def test_full_size_parameter_count_is_exact(head_type: str) -> None:
    with torch.device("meta"):
        head = build_head(HeadConfig(type=head_type))
    assert isinstance(head, HEAD_CLASSES[head_type])
    assert sum(p.numel() for p in head.parameters()) == FULL_SIZE_PARAMS[head_type]
    assert head.output_size == 256
    assert head.config.type == head_type


def test_adapter_parameter_names_are_per_state() -> None:
    with torch.device("meta"):
        head = build_head(HeadConfig(type="adapter_mfa"))
    names = dict(head.named_parameters())
    assert names["adapters.3.linear1.weight"].shape == (128, 1024)
    assert names["adapters.24.norm.weight"].shape == (128,)
    assert names["adapters.0.linear2.weight"].shape == (128, 128)
    assert names["pooling.conv1.weight"].shape == (128, 3200, 1)
    assert names["fc.weight"].shape == (256, 6400)


@pytest.mark.parametrize("head_type", sorted(FULL_SIZE_PARAMS))
@pytest.mark.parametrize("train", [False, True])
def test_forward_shape_small_config(head_type: str, train: bool) -> None:
    torch.manual_seed(0)
    head = build_head(small_config(head_type)).train(train)
    hidden = torch.randn(5, 3, 11, 32)
    out = head(hidden)
    assert out.shape == (3, 16)
    assert torch.isfinite(out).all()
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 7:] = False
    out_masked = head.eval()(hidden, mask)
    assert out_masked.shape == (3, 16)
    assert torch.isfinite(out_masked).all()


@pytest.mark.parametrize("head_type", ["mfa", "adapter_mfa"])
@pytest.mark.parametrize("garbage", ["large", "nan"])
def test_mfa_heads_ignore_masked_frames(head_type: str, garbage: str) -> None:
    torch.manual_seed(1)
    head = build_head(small_config(head_type))
    randomise_batchnorm_stats(head)
    head.eval()
    short = torch.randn(5, 1, 7, 32)
    other = torch.randn(5, 1, 12, 32)
    pad = torch.randn(5, 1, 5, 32) * 100.0 if garbage == "large" else torch.full((5, 1, 5, 32), float("nan"))
    batch = torch.cat([torch.cat([short, pad], dim=2), other], dim=1)  # (5, 2, 12, 32)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 7:] = False
    with torch.no_grad():
        batched = head(batch, mask)
        alone_short = head(short)
        alone_other = head(other)
    torch.testing.assert_close(batched[0], alone_short[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], alone_other[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("global_context", [False, True])
def test_pooling_ignores_masked_frames(global_context: bool) -> None:
    torch.manual_seed(2)
    pooling = AttentiveStatisticsPooling(12, 6, global_context=global_context)
    randomise_batchnorm_stats(pooling)
    pooling.eval()
    short = torch.randn(1, 12, 6)
    padded = torch.cat([short, torch.randn(1, 12, 4) * 50.0], dim=2)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, :6] = True
    with torch.no_grad():
        torch.testing.assert_close(pooling(padded, mask), pooling(short), atol=1e-5, rtol=1e-5)
    assert pooling.output_size == 24


def test_pooling_matches_explicit_statistics_without_global_context() -> None:
    torch.manual_seed(3)
    pooling = AttentiveStatisticsPooling(4, 3, global_context=False).eval()
    x = torch.randn(2, 4, 9)
    with torch.no_grad():
        scores = pooling.conv2(pooling.norm(torch.relu(pooling.conv1(x))))
        w = torch.softmax(scores, dim=-1)
        mean = (w * x).sum(-1)
        std = ((w * x * x).sum(-1) - mean**2).clamp(min=1e-5).sqrt()
        torch.testing.assert_close(pooling(x), torch.cat([mean, std], dim=1))


def test_squeeze_excitation_uses_valid_frames_only() -> None:
    torch.manual_seed(4)
    se = SqueezeExcitation(8, 4).eval()
    short = torch.randn(1, 8, 5)
    padded = torch.cat([short, torch.randn(1, 8, 3) * 10.0], dim=2)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    with torch.no_grad():
        torch.testing.assert_close(se(padded, mask)[..., :5], se(short), atol=1e-6, rtol=1e-6)


def test_layer_weighted_average_with_equal_weights_is_the_mean() -> None:
    torch.manual_seed(5)
    average = LayerWeightedAverage(5)
    hidden = torch.randn(5, 2, 7, 3)
    torch.testing.assert_close(average(hidden), hidden.mean(dim=0))
    with torch.no_grad():
        average.weights.fill_(3.0)  # any equal values give the same softmax
    torch.testing.assert_close(average(hidden), hidden.mean(dim=0))
    with torch.no_grad():
        average.weights.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0, 0.0]))
    torch.testing.assert_close(average(hidden), hidden[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head_type", sorted(FULL_SIZE_PARAMS))
def test_gradient_reaches_every_parameter(head_type: str) -> None:
    torch.manual_seed(6)
    head = build_head(small_config(head_type)).train()
    hidden = torch.randn(5, 3, 10, 32, requires_grad=True)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[2, 6:] = False
    head(hidden, mask).pow(2).sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
    for name, param in head.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    nonzero = [name for name, p in head.named_parameters() if p.grad.abs().sum() > 0]
    # softmax over time is invariant to a per-channel bias of the last attention conv, so its gradient is ~0
    zero = sorted(set(dict(head.named_parameters())) - set(nonzero))
    assert all(name.endswith("pooling.conv2.bias") for name in zero), zero


def test_config_round_trip_and_validation() -> None:
    config = small_config("adapter_mfa")
    assert HeadConfig.from_dict(config.to_dict()) == config
    head = build_head(config.to_dict())
    assert isinstance(head, AdapterMFAHead) and head.config == config and head.output_size == 16
    with pytest.raises(ValueError, match="type='xvector'"):
        HeadConfig(type="xvector")
    with pytest.raises(ValueError, match="embed_dim=0"):
        HeadConfig(type="mfa", embed_dim=0)
    with pytest.raises(ValueError, match="ecapa_scale=3"):
        HeadConfig(type="wavg_ecapa", ecapa_scale=3)
    with pytest.raises(ValueError, match="unknown keys"):
        HeadConfig.from_dict({"type": "mfa", "layers": 3})


def test_wrong_input_shapes_are_rejected() -> None:
    head = build_head(small_config("mfa"))
    with pytest.raises(ValueError, match=r"expected \(5, B, T, 32\)"):
        head(torch.randn(4, 2, 6, 32))
    with pytest.raises(ValueError, match="mask"):
        head(torch.randn(5, 2, 6, 32), torch.ones(2, 5, dtype=torch.bool))
