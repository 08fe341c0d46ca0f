"""Distillation loss (Eq. 5), augmented Lagrangian (Eq. 9), target schedule and optimizer groups."""

import pytest
import torch

from svlib.model.encoder import build_hf_encoder
from svlib.pruning import (
    AugmentedLagrangian,
    GatedW2VBertEncoder,
    PruningConfig,
    distill_loss,
    distill_loss_per_layer,
    pruning_param_groups,
    target_sparsity,
)


def test_distill_loss_by_hand():
    """Eq. (5) as the authors and DPHuBERT compute it: a mean over the L+1 layers of (L1 − cosine), where L1 is the
    mean absolute difference over frames and dimensions and the cosine is averaged over frames."""
    torch.manual_seed(0)
    s, t = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    per_layer = []
    for layer in range(3):
        frames = [(s[layer, b, f], t[layer, b, f]) for b in range(2) for f in range(4)]
        l1 = sum((a - c).abs().mean() for a, c in frames) / len(frames)
        cos = sum(torch.dot(a, c) / (a.norm() * c.norm()) for a, c in frames) / len(frames)
        per_layer.append(float(l1 - cos))
    expected = sum(per_layer) / len(per_layer)  # the mean over the 3 layers, not their sum
    assert distill_loss(s, t).item() == pytest.approx(expected, abs=1e-5)
    assert distill_loss(t, t).item() == pytest.approx(-1.0, abs=1e-5)  # minimum −1 for any number of layers


def test_distill_loss_is_the_mean_over_layers():
    """The loss does not grow with the number of hidden states: the paper's λ / log α learning rate of 0.02 was
    tuned for this mean (a sum over 25 states weighs the distillation gradient 25 times more against Eq. (9))."""
    torch.manual_seed(3)
    s, t = torch.randn(25, 2, 6, 8), torch.randn(25, 2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    for m in (None, mask):
        loss = distill_loss(s, t, m)
        assert torch.allclose(loss, distill_loss_per_layer(s, t, m).mean(), atol=1e-6)
        # stacking the 25 states twice (50 "layers") leaves the mean unchanged; a sum would double
        doubled = distill_loss(torch.cat([s, s]), torch.cat([t, t]), m)
        assert torch.allclose(doubled, loss, atol=1e-6)
    # still exact on the valid frames only: padded frames do not count in any layer
    s2 = s.clone()
    s2[:, 1, 3:] = 1e3
    assert torch.allclose(distill_loss(s2, t, mask), distill_loss(s, t, mask), atol=1e-6)


def test_distill_loss_ignores_padding():
    torch.manual_seed(1)
    s, t = torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    loss = distill_loss_per_layer(s, t, mask)
    s2 = s.clone()
    s2[:, 1, 2:] = 100.0  # change only padded frames
    assert torch.allclose(distill_loss_per_layer(s2, t, mask), loss)
    # equals the loss over the 8 valid frames laid out as one unpadded utterance
    valid_s = torch.cat([s[:, 0], s[:, 1, :2]], dim=1)[:, None]
    valid_t = torch.cat([t[:, 0], t[:, 1, :2]], dim=1)[:, None]
    assert torch.allclose(distill_loss_per_layer(valid_s, valid_t), loss, atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        distill_loss(s, t[:1])
    with pytest.raises(ValueError, match="attention_mask"):
        distill_loss(s, t, mask[:, :3])


def test_distill_loss_does_not_train_the_teacher():
    s = torch.randn(2, 1, 3, 4, requires_grad=True)
    t = torch.randn(2, 1, 3, 4, requires_grad=True)
    distill_loss(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_lagrangian_value_and_ascent():
    lagrangian = AugmentedLagrangian()
    assert lagrangian.lambda1.item() == 0 and lagrangian.lambda2.item() == 0
    with torch.no_grad():
        lagrangian.lambda1.fill_(0.3)
        lagrangian.lambda2.fill_(2.0)
    s = torch.tensor(0.5, requires_grad=True)
    penalty = lagrangian(s, 0.8)
    assert penalty.item() == pytest.approx(0.3 * (-0.3) + 2.0 * 0.09)
    penalty.backward()
    # the multipliers get the negated gradient (ascent); the sparsity the true one
    assert lagrangian.lambda1.grad.item() == pytest.approx(0.3)
    assert lagrangian.lambda2.grad.item() == pytest.approx(-0.09)
    assert s.grad.item() == pytest.approx(0.3 + 2 * 2.0 * (-0.3))


def test_optimizing_the_penalty_drives_sparsity_to_the_target():
    """Descent on log α and ascent on λ together raise the expected sparsity towards t (no distillation)."""
    torch.manual_seed(2)
    student = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"))
    lagrangian = AugmentedLagrangian()
    config = PruningConfig(lr_log_alpha=0.1, lr_lambda=0.1)
    optimizer = torch.optim.AdamW(pruning_param_groups(student, lagrangian, config))
    start = student.expected_sparsity().item()
    for _ in range(60):
        loss = lagrangian(student.expected_sparsity(), 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = student.expected_sparsity().item()
    assert start < 0.2 and end > start + 0.2
    assert lagrangian.lambda1.item() < 0 and lagrangian.lambda2.item() > 0


def test_target_sparsity_warmup():
    assert target_sparsity(0, 0.8, 10_000) == 0.0
    assert target_sparsity(5_000, 0.8, 10_000) == pytest.approx(0.4)
    assert target_sparsity(10_000, 0.8, 10_000) == pytest.approx(0.8)
    assert target_sparsity(50_000, 0.8, 10_000) == pytest.approx(0.8)
    assert target_sparsity(3, 0.8, 0) == 0.8


def test_param_groups():
    student = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"))
    lagrangian = AugmentedLagrangian()
    groups = pruning_param_groups(student, lagrangian)
    assert [g["name"] for g in groups] == ["weights", "log_alpha", "lambda"]
    assert [g["lr"] for g in groups] == [2e-4, 0.02, 0.02]
    assert all(g["weight_decay"] == 0.0 for g in groups)
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    everything = {id(p) for p in student.parameters()} | {id(p) for p in lagrangian.parameters()}
    assert ids[0] | ids[1] | ids[2] == everything
    assert len(ids[1]) == 4 * student.config.num_hidden_layers  # ffn1, ffn2, heads, conv per layer
    torch.optim.AdamW(groups)  # accepted as is


def test_config_validation():
    with pytest.raises(ValueError, match="target_sparsity"):
        PruningConfig(target_sparsity=1.0)
    with pytest.raises(ValueError, match="init_drop_heads"):
        PruningConfig(init_drop_heads=0.0)
