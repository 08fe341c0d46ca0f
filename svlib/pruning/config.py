"""The settings of distillation-guided structured pruning (paper §2.6 and §3.3), in one dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from svlib.pruning.hardconcrete import BETA, GAMMA, INIT_STD, ZETA


@dataclass
class PruningConfig:
    """Hard Concrete gates, target sparsity schedule and learning rates of the pruning stage.

    The defaults are the paper's (and the authors' recipe): β = 2/3, γ = −0.1, ζ = 1.1; initial drop probability
    0.5 for FFN units and 0.01 for heads and conv channels; target sparsity 0.8 reached linearly over 10,000 steps;
    AdamW without weight decay, learning rates 2e-4 (student weights), 0.02 (``log α``) and 0.02 (λ1, λ2).
    """

    target_sparsity: float = 0.8
    """target t of Eq. (9): 1 − params(student) / params(teacher)."""
    warmup_steps: int = 10_000
    """steps over which the target rises linearly from 0 to ``target_sparsity``."""
    lr_weights: float = 2e-4
    """learning rate of the student's weights."""
    lr_log_alpha: float = 0.02
    """learning rate of the gates' ``log α``."""
    lr_lambda: float = 0.02
    """learning rate of the Lagrange multipliers λ1, λ2 (gradient ascent)."""
    init_drop_ffn: float = 0.5
    """initial drop probability p of FFN-unit gates: ``log α ~ N(log((1−p)/p), init_std)``."""
    init_drop_heads: float = 0.01
    """initial drop probability of attention-head gates."""
    init_drop_conv: float = 0.01
    """initial drop probability of conv-channel gates."""
    init_std: float = INIT_STD
    """standard deviation of the initial ``log α``."""
    beta: float = BETA
    """temperature β of Eq. (7)."""
    gamma: float = GAMMA
    """lower stretch limit γ of Eq. (7)."""
    zeta: float = ZETA
    """upper stretch limit ζ of Eq. (7)."""
    align: int = 1
    """hardware alignment (beyond the paper): keep a multiple of ``align`` FFN units and conv channels per block
    (8 or 16), in the final structure and in the count the target constrains (:mod:`svlib.pruning.params`); 1: the
    paper's unaligned structure."""

    def __post_init__(self):
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ValueError(f"PruningConfig.target_sparsity must be in [0, 1), got {self.target_sparsity!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"PruningConfig.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        for name in ("lr_weights", "lr_log_alpha", "lr_lambda", "init_std", "beta"):
            if getattr(self, name) < 0 or (name == "beta" and self.beta == 0):
                raise ValueError(f"PruningConfig.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("init_drop_ffn", "init_drop_heads", "init_drop_conv"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"PruningConfig.{name} must be in (0, 1), got {getattr(self, name)!r}")
        if not (isinstance(self.align, int) and self.align >= 1):
            raise ValueError(f"PruningConfig.align must be a positive integer (1: no alignment), got {self.align!r}")
        if not (self.gamma < 0.0 and self.zeta > 1.0):
            raise ValueError(
                f"PruningConfig needs gamma < 0 and zeta > 1, got gamma={self.gamma!r}, zeta={self.zeta!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def gate_settings(self) -> dict:
        """The Hard Concrete constants under the authors' names, as a structure file records them
        (``gates`` of :class:`svlib.model.structure.PrunedStructure`)."""
        return {"limit_l": self.gamma, "limit_r": self.zeta, "temperature": self.beta, "prune": False}
