"""Hard Concrete gates (Eqs. 6–8): sampling, the expected L0 norm against Monte Carlo, the deterministic mask."""

import math

import pytest
import torch

from svlib.pruning import BETA, GAMMA, ZETA, HardConcrete, expected_l0


def _gate(n: int, log_alpha: torch.Tensor | float) -> HardConcrete:
    gate = HardConcrete(n)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.as_tensor(log_alpha).expand(n))
    return gate


@pytest.mark.parametrize("log_alpha", [-3.0, -1.0, 0.0, 1.5, 4.6])
def test_expected_l0_matches_monte_carlo(log_alpha):
    """Eq. (8) is P(z > 0): compare with the fraction of non-zero samples of Eq. (7) over 200k draws."""
    n = 200_000
    gate = _gate(n, log_alpha).train()
    with torch.no_grad():
        frequency = (gate() > 0).double().mean().item()
    p = expected_l0(torch.tensor(log_alpha)).item()
    stderr = math.sqrt(p * (1 - p) / n)
    assert abs(frequency - p) < 5 * stderr + 1e-6, (frequency, p, stderr)


def test_expected_l0_closed_form():
    la = torch.tensor([-2.0, 0.0, 3.0])
    shift = BETA * math.log(-GAMMA / ZETA)  # = (2/3)·log(1/11) ≈ −1.599
    assert torch.allclose(expected_l0(la), torch.sigmoid(la - shift))
    assert shift == pytest.approx(-1.5986, abs=1e-4)


def test_sample_follows_eq7():
    """Re-draw the same uniforms and apply Eq. (7) by hand."""
    gate = _gate(1000, 0.0).train()
    with torch.no_grad():
        gate.log_alpha.normal_(0.0, 2.0)
    torch.manual_seed(123)
    z = gate()
    torch.manual_seed(123)
    u = torch.rand(1000).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + gate.log_alpha) / BETA)
    expected = torch.clamp(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
    assert torch.allclose(z, expected, atol=1e-6)
    # the stretch and clamp give exact zeros and ones as well as values in between
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()


def test_sample_is_differentiable_and_random():
    gate = HardConcrete(64).train()
    a, b = gate(), gate()
    assert not torch.equal(a, b)
    (a.sum() + gate.l0_norm()).backward()
    assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("drop_prob, mean", [(0.5, 0.0), (0.01, math.log(99.0))])
def test_initialisation(drop_prob, mean):
    torch.manual_seed(1)
    gate = HardConcrete(20_000, init_drop_prob=drop_prob)
    la = gate.log_alpha.detach()
    assert la.mean().item() == pytest.approx(mean, abs=4 * 0.01 / math.sqrt(20_000))
    assert la.std().item() == pytest.approx(0.01, rel=0.05)


def test_deterministic_mask_dphubert_convention():
    torch.manual_seed(2)
    gate = HardConcrete(50)
    with torch.no_grad():
        gate.log_alpha.normal_(0.0, 3.0)
    gate.eval()
    mask = gate()
    assert torch.equal(mask, gate())  # deterministic
    n_keep = math.floor(expected_l0(gate.log_alpha).sum().item() + 0.5)
    top = torch.topk(gate.log_alpha.detach(), n_keep).indices
    values = torch.clamp(torch.sigmoid(gate.log_alpha.detach()) * (ZETA - GAMMA) + GAMMA, 0, 1)
    expected = torch.zeros(50)
    expected[top] = values[top]
    assert torch.allclose(mask, expected)
    assert ((mask > 0) & (mask < 1)).any()  # soft values that pruning must fold


def test_deterministic_mask_extremes():
    assert torch.equal(_gate(8, 10.0).eval()(), torch.ones(8))
    assert torch.equal(_gate(8, -10.0).eval()(), torch.zeros(8))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="at least one gate"):
        HardConcrete(0)
    with pytest.raises(ValueError, match="drop probability"):
        HardConcrete(3, init_drop_prob=1.0)
    with pytest.raises(ValueError, match="gamma < 0"):
        HardConcrete(3, gamma=0.1)
