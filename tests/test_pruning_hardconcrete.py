"""Hard Concrete gates (Eqs. 6–8): sampling, the expected L0 norm against Monte Carlo, the deterministic mask."""

import math

import numpy as np
import pytest
import torch

from svlib.pruning import BETA, GAMMA, HardConcrete, ZETA, expected_l0


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


def _reference_mask(log_alpha: np.ndarray, beta=BETA, gamma=GAMMA, zeta=ZETA) -> np.ndarray:
    """DPHuBERT's and the authors' eval-time rule, written out independently with plain loops.

    n gates; expected open gates L0 = Σ sigmoid(log α − β·log(−γ/ζ)); num_zeros = round(n − L0) (Python's
    round, as in their code); every unit has the value sigmoid(0.8 · log α / β), and the num_zeros units with the
    smallest log α are set to 0. Ties in log α: the unit with the higher index is zeroed first. Per-gate terms are
    computed in float32, the precision of the gates; the sum in float64.
    """
    la = [np.float32(x) for x in log_alpha]
    n = len(la)
    shift = np.float32(beta * math.log(-gamma / zeta))
    expected_open = 0.0
    for a in la:
        expected_open += float(np.float32(1.0) / (np.float32(1.0) + np.exp(-(a - shift), dtype=np.float32)))
    num_zeros = round(n - expected_open)
    values = [float(1.0 / (1.0 + math.exp(-float(a) / beta * 0.8))) for a in la]
    # order: smallest log α first; among equal log α, the highest index first
    order = sorted(range(n), key=lambda i: (float(la[i]), -i))
    for i in order[:num_zeros]:
        values[i] = 0.0
    return np.array(values)


def _mask_of(log_alpha: np.ndarray) -> torch.Tensor:
    gate = HardConcrete(len(log_alpha))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.as_tensor(log_alpha, dtype=torch.float32))
    with torch.no_grad():
        return gate.eval()()


_SHIFT32 = float(np.float32(BETA * math.log(-GAMMA / ZETA)))  # log α with E[L0] = sigmoid(0) = 1/2 exactly


def _mask_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    cases = {
        "example_1000_at_+6": np.r_[np.full(1000, 6.0), np.full(3096, -3.0)],
        "all_open": np.full(16, 10.0),
        "all_closed": np.full(16, -10.0),
        "one_gate_open": np.array([4.6]),
        "one_gate_closed": np.array([-4.0]),
        "ties_at_init": np.zeros(8),  # E[L0] = 8·0.832 = 6.66: round(1.34) = 1 unit zeroed among 8 equal ones
        "ties_mixed": np.array([1.0, -2.0, 1.0, -2.0, -2.0, 3.0, 1.0, -2.0]),
        "half_round_to_even": np.full(3, _SHIFT32),  # L0 = 1.5, round(3 − 1.5) = 2 (even): 1 unit kept
        "half_round_to_even_2": np.array([_SHIFT32, 20.0]),  # L0 = 1.5, round(0.5) = 0: both kept
    }
    for i, (n, mean, std) in enumerate([(16, 4.6, 0.01), (4096, 0.0, 0.01), (50, 0.0, 3.0), (1024, -1.0, 2.0),
                                        (4096, -2.5, 1.5), (7, 0.5, 5.0)]):
        cases[f"random_{i}_n{n}"] = rng.normal(mean, std, n)
    return cases


@pytest.mark.parametrize("name, log_alpha", list(_mask_cases().items()), ids=list(_mask_cases()))
def test_deterministic_mask_matches_reference_rule(name, log_alpha):
    """The eval mask against the independent implementation above: the same kept units, the same soft values."""
    mask = _mask_of(log_alpha).double().numpy()
    reference = _reference_mask(log_alpha)
    assert np.array_equal(mask > 0, reference > 0), name
    assert np.allclose(mask, reference, rtol=1e-6, atol=1e-7), name


def test_deterministic_mask_example_keeps_1611():
    """4096 gates, 1000 at log α = +6, 3096 at −3: L0 = 1000·0.9995 + 3096·0.1976 ≈ 1611.2, so 1611 units stay;
    the 611 kept units at −3 have the value sigmoid(0.8·(−3)/β) = sigmoid(−3.6) ≈ 0.027 (svlib's former rule
    clamped their value to 0 and kept only 1000)."""
    log_alpha = np.r_[np.full(1000, 6.0), np.full(3096, -3.0)]
    mask = _mask_of(log_alpha)
    assert int((mask > 0).sum()) == 1611
    assert torch.allclose(mask[:1000], torch.full((1000,), 1 / (1 + math.exp(-7.2))))
    low = mask[1000:]
    assert int((low > 0).sum()) == 611 and bool((low[:611] > 0).all())  # ties: the lowest indices stay
    assert low[low > 0].sub(1 / (1 + math.exp(3.6))).abs().max() < 1e-7


def test_deterministic_mask_is_deterministic_and_soft():
    torch.manual_seed(2)
    gate = HardConcrete(50)
    with torch.no_grad():
        gate.log_alpha.normal_(0.0, 3.0)
    gate.eval()
    mask = gate()
    assert torch.equal(mask, gate())
    kept = mask > 0
    assert gate.log_alpha[kept].min() >= gate.log_alpha[~kept].max()  # top-k by log α
    assert (mask[kept] < 1).all() and int(kept.sum()) == 50 - round(50 - gate.l0_norm().item())
    assert (mask[~kept] == 0).all()  # every kept value is soft (below 1): pruning must fold it


def test_deterministic_mask_extremes():
    # every gate open: all kept, each with the value sigmoid(0.8·10/β) = sigmoid(12), just below 1
    assert torch.allclose(_gate(8, 10.0).eval()(), torch.full((8,), 1 / (1 + math.exp(-12.0))), rtol=0, atol=1e-7)
    assert torch.equal(_gate(8, -10.0).eval()(), torch.zeros(8))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="at least one gate"):
        HardConcrete(0)
    with pytest.raises(ValueError, match="drop probability"):
        HardConcrete(3, init_drop_prob=1.0)
    with pytest.raises(ValueError, match="gamma < 0"):
        HardConcrete(3, gamma=0.1)
