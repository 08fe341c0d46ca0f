"""Tests for svlib.model.losses: ArcFace logits against an explicit angle computation, and the margin schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from svlib.model.losses import ArcMarginProduct, MarginScheduler


def arcface_2d(angles: list[float], label: int, margin: float, scale: float, easy_margin: bool = False):
    """Module whose class weights lie at ``angles`` from an embedding on the x axis, plus the embedding."""
    module = ArcMarginProduct(2, len(angles), scale=scale, margin=margin, easy_margin=easy_margin)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[math.cos(a), math.sin(a)] for a in angles]) * 2.5)
    embedding = torch.tensor([[3.0, 0.0]])
    return module, embedding, torch.tensor([label])


@pytest.mark.parametrize("margin", [0.2, 0.5])
@pytest.mark.parametrize("theta", [0.1, 1.0, 2.0, 2.6])
def test_logits_match_explicit_angles(margin: float, theta: float) -> None:
    assert theta + margin < math.pi
    angles = [0.7, theta, -2.2]  # class 1 is the target; weight at -2.2 rad is at angle 2.2 from the embedding
    module, embedding, label = arcface_2d(angles, 1, margin, 32.0)
    logits = module(embedding, label)
    expected = torch.tensor([[32.0 * math.cos(0.7), 32.0 * math.cos(theta + margin), 32.0 * math.cos(2.2)]])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("margin,theta", [(0.5, 2.9), (0.2, 3.0), (0.5, 3.1)])
def test_fallback_branch_beyond_pi(margin: float, theta: float) -> None:
    assert theta + margin > math.pi
    module, embedding, label = arcface_2d([theta, 0.3], 0, margin, 32.0)
    logits = module(embedding, label)
    target = 32.0 * (math.cos(theta) - math.sin(math.pi - margin) * margin)
    torch.testing.assert_close(logits, torch.tensor([[target, 32.0 * math.cos(0.3)]]), atol=1e-4, rtol=1e-5)
    # the fallback keeps the target logit below the plain cosine logit, i.e. still a penalty
    assert target < 32.0 * math.cos(theta)


def test_easy_margin_uses_plain_cosine_for_obtuse_angles() -> None:
    module, embedding, label = arcface_2d([2.0, 0.3], 0, 0.5, 32.0, easy_margin=True)
    torch.testing.assert_close(module(embedding, label)[0, 0], torch.tensor(32.0 * math.cos(2.0)))
    module, embedding, label = arcface_2d([1.0, 0.3], 0, 0.5, 32.0, easy_margin=True)
    torch.testing.assert_close(module(embedding, label)[0, 0], torch.tensor(32.0 * math.cos(1.5)))


def test_zero_margin_gives_scaled_cosine() -> None:
    torch.manual_seed(0)
    module = ArcMarginProduct(16, 10, scale=32.0, margin=0.0)
    embeddings = torch.randn(6, 16)
    labels = torch.randint(0, 10, (6,))
    expected = 32.0 * F.normalize(embeddings) @ F.normalize(module.weight).T
    torch.testing.assert_close(module(embeddings, labels), expected.detach(), atol=1e-5, rtol=1e-5)


def test_set_margin_updates_constants_and_gradient_flows() -> None:
    torch.manual_seed(1)
    module = ArcMarginProduct(8, 5)
    assert module.scale == 32.0 and module.margin == 0.2
    module.set_margin(0.5)
    assert module.margin == 0.5
    assert module.cos_m == pytest.approx(math.cos(0.5)) and module.sin_m == pytest.approx(math.sin(0.5))
    assert module.th == pytest.approx(math.cos(math.pi - 0.5))
    assert module.mm == pytest.approx(math.sin(math.pi - 0.5) * 0.5)
    embeddings = torch.randn(4, 8, requires_grad=True)
    logits = module(embeddings, torch.tensor([0, 1, 2, 3]))
    assert logits.shape == (4, 5)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="margin=2.0"):
        module.set_margin(2.0)
    with pytest.raises(ValueError, match="expected \\(B, 8\\)"):
        module(torch.randn(4, 7), torch.tensor([0, 1, 2, 3]))


def test_scheduler_linear() -> None:
    schedule = MarginScheduler(0.0, 0.2, increase_start_epoch=2, fix_start_epoch=6, increase_type="linear")
    assert schedule.margin_at(0) == 0.0 and schedule.margin_at(1.99) == 0.0
    assert schedule.margin_at(2) == 0.0
    assert schedule.margin_at(3) == pytest.approx(0.05)
    assert schedule.margin_at(4) == pytest.approx(0.1)
    assert schedule.margin_at(6) == 0.2 and schedule.margin_at(100) == 0.2


def test_scheduler_exp() -> None:
    schedule = MarginScheduler(0.0, 0.2, increase_start_epoch=0, fix_start_epoch=10, increase_type="exp")
    ramp = lambda p: (1 - math.exp(-5 * p)) / (1 - math.exp(-5))  # noqa: E731
    assert schedule.margin_at(0) == 0.0
    assert schedule.margin_at(2) == pytest.approx(0.2 * ramp(0.2))
    assert schedule.margin_at(5) == pytest.approx(0.2 * ramp(0.5))
    assert schedule.margin_at(2) > 0.2 * 0.2  # rises faster than the linear ramp
    assert schedule.margin_at(9.999999) == pytest.approx(0.2, abs=1e-6)
    assert schedule.margin_at(10) == 0.2


def test_scheduler_constant_steps_at_fix_epoch() -> None:
    schedule = MarginScheduler(0.2, 0.5, increase_start_epoch=1, fix_start_epoch=4, increase_type="constant")
    assert [schedule.margin_at(e) for e in (0, 1, 3.9, 4, 5)] == [0.2, 0.2, 0.2, 0.5, 0.5]
    fixed = MarginScheduler(0.2, 0.2, 0, 0, increase_type="constant")
    assert fixed.margin_at(0) == 0.2 and fixed.margin_at(3) == 0.2


@pytest.mark.parametrize("increase_type", ["exp", "linear", "constant"])
def test_scheduler_is_monotone(increase_type: str) -> None:
    schedule = MarginScheduler(0.1, 0.5, 1.0, 3.0, increase_type=increase_type)
    values = [schedule.margin_at(i / 10) for i in range(50)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[0] == 0.1 and values[-1] == 0.5
    decreasing = MarginScheduler(0.5, 0.1, 1.0, 3.0, increase_type=increase_type)
    values = [decreasing.margin_at(i / 10) for i in range(50)]
    assert all(b <= a for a, b in zip(values, values[1:]))


def test_scheduler_step_sets_margin_and_validates() -> None:
    module = ArcMarginProduct(4, 3, margin=0.0)
    schedule = MarginScheduler(0.0, 0.2, 0, 2, increase_type="linear")
    assert schedule.step(module, 1.0) == pytest.approx(0.1)
    assert module.margin == pytest.approx(0.1)
    schedule.step(module, 5)
    assert module.margin == 0.2
    with pytest.raises(ValueError, match="set_margin"):
        schedule.step(torch.nn.Linear(2, 2), 1.0)
    with pytest.raises(ValueError, match="increase_type='cosine'"):
        MarginScheduler(0.0, 0.2, 0, 2, increase_type="cosine")
    with pytest.raises(ValueError, match="fix_start_epoch=1"):
        MarginScheduler(0.0, 0.2, 2, 1)
