"""Hard Concrete gates (paper §2.6, Eqs. 6–8).

Every prunable group of parameters θ̂_j (one FFN intermediate unit, one attention head, one conv channel) is
multiplied by a gate ``z_j`` drawn from the Hard Concrete distribution of Louizos et al. (2018), as in DPHuBERT and
DiariZen. A :class:`HardConcrete` module holds the gates of one block (``n`` units) as the learnable ``log_alpha``
and returns, with no input,

* in training mode a **sample** (Eq. 7): ``u ~ U(0, 1)``,
  ``s = sigmoid((log u − log(1 − u) + log α) / β)``, ``z = min(1, max(0, s·(ζ − γ) + γ))``;
* in eval mode a **deterministic mask**, DPHuBERT's and the authors' rule: with ``n`` gates and
  ``L0 = Σ_j E[L0_j]`` the expected number of open gates, the ``round(n − L0)`` units with the smallest ``log α``
  are 0 and every other unit keeps the soft value ``sigmoid(0.8 · log α / β)``
  (:meth:`HardConcrete.deterministic_mask`).

The expected L0 norm of one gate (Eq. 8) is ``P(z_j > 0) = sigmoid(log α_j − β·log(−γ/ζ))``.

Explained in the book chapters "Hard Concrete gates" and "Lagrangian pruning".
"""

from __future__ import annotations

import math

import torch
from torch import nn

BETA = 2.0 / 3.0
"""Temperature β of Eq. (7) (the paper's value)."""
GAMMA = -0.1
"""Lower stretch limit γ of Eq. (7) (``limit_l`` in the authors' structure files)."""
ZETA = 1.1
"""Upper stretch limit ζ of Eq. (7) (``limit_r`` in the authors' structure files)."""
INIT_STD = 0.01
"""Standard deviation of the initial ``log α`` (DPHuBERT's value)."""
EVAL_FACTOR = 0.8
"""The factor in the eval-time value ``sigmoid(0.8 · log α / β)`` of a kept gate: DPHuBERT's "empirically validated
magic number" (from FLOP), also in the authors' code."""


def expected_l0(log_alpha: torch.Tensor, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA) -> torch.Tensor:
    """Probability that each gate is non-zero, ``P(z_j > 0)``: the per-gate term of Eq. (8).

    ``E[||z_j||_0] = sigmoid(log α_j − β·log(−γ/ζ))``; summed over the gates of a group and weighted by the
    group's parameter count ``|g|`` it gives Eq. (8).

    Args:
        log_alpha: ``log α``, any shape.
        beta: temperature β.
        gamma: lower stretch limit γ (negative).
        zeta: upper stretch limit ζ (above 1).

    Returns:
        Tensor of the shape of ``log_alpha`` with values in (0, 1), differentiable in ``log_alpha``.
    """
    return torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


def init_log_alpha_mean(drop_prob: float) -> float:
    """Mean of the initial ``log α`` for an initial drop probability ``p``: ``log((1 − p) / p)``.

    Args:
        drop_prob: ``p`` in (0, 1); the paper uses 0.5 for FFN units and 0.01 for heads and conv channels.

    Returns:
        ``log((1 − p) / p)`` (0 for p = 0.5, about 4.6 for p = 0.01).
    """
    if not 0.0 < drop_prob < 1.0:
        raise ValueError(f"initial drop probability must be in (0, 1), got {drop_prob!r}")
    return math.log((1.0 - drop_prob) / drop_prob)


class HardConcrete(nn.Module):
    """The Hard Concrete gates ``z`` of one block of ``n`` prunable units (Eqs. 6–8).

    Call the module with no input to get the gates: a sample of Eq. (7) in training mode, the deterministic mask in
    eval mode (see the module docstring). ``l0()`` gives ``E[L0]`` per gate (Eq. 8), differentiable.

    Args:
        n: number of gates (units of the block).
        init_drop_prob: ``p`` of the initialisation ``log α ~ N(log((1 − p)/p), init_std)``.
        init_std: standard deviation of the initial ``log α``.
        beta: temperature β.
        gamma: lower stretch limit γ.
        zeta: upper stretch limit ζ.
    """

    def __init__(
        self,
        n: int,
        init_drop_prob: float = 0.5,
        init_std: float = INIT_STD,
        beta: float = BETA,
        gamma: float = GAMMA,
        zeta: float = ZETA,
    ):
        super().__init__()
        if n < 1:
            raise ValueError(f"HardConcrete needs at least one gate, got n={n!r}")
        if not (gamma < 0.0 and zeta > 1.0 and beta > 0.0):
            raise ValueError(f"HardConcrete needs gamma < 0, zeta > 1 and beta > 0, got {gamma=}, {zeta=}, {beta=}")
        self.n = n
        self.init_drop_prob = init_drop_prob
        self.init_std = init_std
        self.beta, self.gamma, self.zeta = beta, gamma, zeta
        self.log_alpha = nn.Parameter(torch.empty(n))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw ``log α ~ N(log((1 − p)/p), init_std)``."""
        with torch.no_grad():
            self.log_alpha.normal_(init_log_alpha_mean(self.init_drop_prob), self.init_std)

    def extra_repr(self) -> str:
        return f"n={self.n}, beta={self.beta:.4g}, gamma={self.gamma}, zeta={self.zeta}"

    # -- Eq. (8) ------------------------------------------------------------------------------------------------
    def l0(self) -> torch.Tensor:
        """``E[L0]`` of each gate, ``sigmoid(log α − β·log(−γ/ζ))`` (Eq. 8), shape ``(n,)``."""
        return expected_l0(self.log_alpha, self.beta, self.gamma, self.zeta)

    def l0_norm(self) -> torch.Tensor:
        """Expected number of open gates, ``Σ_j E[L0_j]`` (Eq. 8 with ``|g| = 1``), a scalar."""
        return self.l0().sum()

    # -- Eq. (7) ------------------------------------------------------------------------------------------------
    def sample(self) -> torch.Tensor:
        """A sample of the gates (Eq. 7), shape ``(n,)``, values in [0, 1], differentiable in ``log α``."""
        eps = 1e-6
        u = torch.rand_like(self.log_alpha).clamp(eps, 1.0 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def deterministic_mask(self) -> torch.Tensor:
        """The eval-mode gates, shape ``(n,)``: DPHuBERT's and the authors' rule, exactly.

        1. ``L0 = Σ_j sigmoid(log α_j − β·log(−γ/ζ))``, the expected number of open gates (Eq. 8);
        2. ``num_zeros = round(n − L0)``, with Python's ``round`` (halves to even) as in their code;
        3. every unit gets the value ``sigmoid(0.8 · log α_j / β)`` (:data:`EVAL_FACTOR`);
        4. the ``num_zeros`` units with the smallest ``log α`` are set to 0 (among equal ``log α`` the higher index
           goes first, so ties keep the lowest indices).

        So ``n − num_zeros`` units, the top-k by ``log α``, stay; their values are soft (below 1), and physical
        pruning folds them into the next weights (:mod:`svlib.model.resize`). Step 4 orders by ``log α`` rather
        than by the values of step 3, which is the same order wherever the float32 values differ and well
        defined where they round to the same number. Per-gate terms are computed in the dtype of ``log α``, their
        sum in float64.
        """
        log_alpha = self.log_alpha
        num_zeros = round(self.n - self.l0().double().sum().item())
        values = torch.sigmoid(log_alpha / self.beta * EVAL_FACTOR)
        if num_zeros <= 0:
            return values
        # a stable ascending sort of −log α lists the units from the largest log α, lowest index first among ties
        order = torch.sort(-log_alpha.detach(), stable=True).indices
        zeros = order[self.n - num_zeros:]
        return values.index_fill(0, zeros, 0.0)

    def forward(self) -> torch.Tensor:
        """The gates: :meth:`sample` in training mode, :meth:`deterministic_mask` in eval mode, shape ``(n,)``."""
        return self.sample() if self.training else self.deterministic_mask()
