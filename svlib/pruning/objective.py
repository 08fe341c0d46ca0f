"""The pruning objective: distillation loss (Eq. 5), augmented Lagrangian (Eq. 9), target schedule, optimizer groups.

One training step of the pruning stage, with a teacher :class:`~svlib.model.encoder.W2VBertEncoder` (eval, frozen) and a
:class:`~svlib.pruning.gated.GatedW2VBertEncoder` student (train)::

    lagrangian = AugmentedLagrangian()
    optimizer = torch.optim.AdamW(pruning_param_groups(student, lagrangian, config))
    ...
    with torch.no_grad():
        teacher_states = teacher(features, mask)
    loss_distill = distill_loss(student(features, mask), teacher_states, mask)        # Eq. (5), mean over layers
    s = student.expected_sparsity()                                                      # Eq. (8)
    t = target_sparsity(step, config.target_sparsity, config.warmup_steps)
    loss = loss_distill + lagrangian(s, t)                                               # Eq. (9)
    optimizer.zero_grad(); loss.backward(); optimizer.step()

After training, ``student.eval().prune_()`` gives the pruned encoder.

Explained in the book chapters "Hard Concrete gates" and "Lagrangian pruning".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svlib.pruning.config import PruningConfig


def distill_loss_per_layer(
    student_states: torch.Tensor, teacher_states: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The per-layer terms of Eq. (5): ``L1(h_l, ĥ_l) − cos(h_l, ĥ_l)`` averaged over the valid frames.

    ``L1`` is the mean absolute difference over the ``D`` features of a frame, ``cos`` the cosine similarity of the
    two frame vectors; both are averaged over the frames that ``attention_mask`` marks valid (padding excluded).
    The teacher states are a target: no gradient flows into them.

    Args:
        student_states: ``(L+1, B, T, D)`` student hidden states ``ĥ_0 … ĥ_L``.
        teacher_states: ``(L+1, B, T, D)`` teacher hidden states ``h_0 … h_L``.
        attention_mask: ``(B, T)``, 1 for valid frames, 0 for padding; ``None`` if nothing is padded.

    Returns:
        ``(L+1,)`` loss per hidden state.
    """
    if student_states.dim() != 4 or student_states.shape != teacher_states.shape:
        raise ValueError(
            "expected student and teacher hidden states of the same shape (L+1, B, T, D), found "
            f"{tuple(student_states.shape)} and {tuple(teacher_states.shape)}"
        )
    teacher_states = teacher_states.detach()
    l1 = (student_states - teacher_states).abs().mean(-1)  # -> (L+1, B, T)
    cos = F.cosine_similarity(student_states, teacher_states, dim=-1)  # -> (L+1, B, T)
    per_frame = l1 - cos
    if attention_mask is None:
        return per_frame.mean(dim=(1, 2))
    if attention_mask.shape != student_states.shape[1:3]:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; "
            f"expected (B, T) = {tuple(student_states.shape[1:3])}"
        )
    w = attention_mask.to(per_frame.dtype)  # -> (B, T)
    return (per_frame * w).sum(dim=(1, 2)) / w.sum().clamp_min(1.0)


def distill_loss(
    student_states: torch.Tensor, teacher_states: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Distillation loss of Eq. (5): the **mean** over the ``L+1`` layers of ``L1(h_l, ĥ_l) − cos(h_l, ĥ_l)``.

    Eq. (5) writes sums over layers and frames; svlib takes means, as the authors (``nn.L1Loss()``,
    ``cos_sim(...).mean()``) and DPHuBERT do: L1 is averaged over the valid frames and the ``D`` dimensions, the
    cosine over the valid frames, and the per-layer terms (:func:`distill_loss_per_layer`, equal weights) over the
    ``L+1`` layers. The scale matters: Eq. (9) adds this loss to the sparsity penalty, and the paper's learning rate
    of 0.02 for ``log α`` and λ was tuned for the mean. A sum over the 25 states of w2v-BERT 2.0 weighs the
    distillation gradient 25 times more against the penalty, and the expected sparsity then lags far behind the
    target (``bench/probe_distill_sparsity.py``). Padded frames (``attention_mask`` 0) count in no layer.

    Args:
        student_states: ``(L+1, B, T, D)`` student hidden states ``ĥ_0 … ĥ_L``.
        teacher_states: ``(L+1, B, T, D)`` teacher hidden states ``h_0 … h_L`` (no gradient flows into them).
        attention_mask: ``(B, T)``, 1 for valid frames; ``None`` if nothing is padded.

    Returns:
        A scalar; its minimum is −1 (identical states), whatever the number of layers.
    """
    return distill_loss_per_layer(student_states, teacher_states, attention_mask).mean()


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward: a minimising optimizer then ascends."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class AugmentedLagrangian(nn.Module):
    """The sparsity penalty of Eq. (9): ``λ1 (s − t) + λ2 (s − t)²``, maximised over λ1, λ2.

    λ1 and λ2 are learnable scalars starting at 0. Eq. (9) is a saddle point problem, ``max_λ min_{θ,α}``: the
    multipliers pass through a gradient-reversal function, so the loss *value* is the Lagrangian while the gradient
    that reaches λ is negated — a plain optimizer that minimises the total loss (AdamW with a positive learning rate)
    performs gradient **ascent** on λ1, λ2 and descent on the weights and ``log α``. (DPHuBERT uses a negative
    learning rate instead, which ``torch.optim.AdamW`` rejects.) While ``s < t``, λ1 turns negative and λ2 grows,
    pushing the expected sparsity up towards the target.
    """

    def __init__(self):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def forward(self, expected_sparsity: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
        """Eq. (9)'s penalty.

        Args:
            expected_sparsity: ``s``, scalar tensor (from the gates, differentiable).
            target: ``t``, the current target sparsity.

        Returns:
            ``λ1 (s − t) + λ2 (s − t)²``, a scalar.
        """
        gap = expected_sparsity - target
        lambda1 = _ReverseGradient.apply(self.lambda1)
        lambda2 = _ReverseGradient.apply(self.lambda2)
        return lambda1 * gap + lambda2 * gap.square()


def target_sparsity(step: int, target: float, warmup_steps: int) -> float:
    """The target ``t`` of Eq. (9) at optimizer step ``step``: linear from 0 to ``target`` over ``warmup_steps``.

    Args:
        step: optimizer steps done.
        target: final target sparsity (0.8 in the paper).
        warmup_steps: length of the linear ramp (10,000 in the authors' recipe); 0 for no ramp.

    Returns:
        ``target · min(1, step / warmup_steps)``.
    """
    if warmup_steps <= 0:
        return float(target)
    return float(target) * min(1.0, max(step, 0) / warmup_steps)


def pruning_param_groups(
    student: nn.Module, lagrangian: AugmentedLagrangian, config: PruningConfig | None = None
) -> list[dict]:
    """Optimizer parameter groups of the pruning stage: student weights, ``log α``, and λ1, λ2.

    Each group has its learning rate from ``config`` (paper: 2e-4, 0.02, 0.02) and ``weight_decay = 0``; pass the
    list to ``torch.optim.AdamW``. The λ group descends on a negated gradient, i.e. ascends (see
    :class:`AugmentedLagrangian`). Each group carries a ``"name"`` key for logging.

    Args:
        student: a :class:`~svlib.pruning.gated.GatedW2VBertEncoder`.
        lagrangian: the multipliers.
        config: learning rates; the student's own ``pruning`` config when ``None``.

    Returns:
        Three parameter-group dicts: ``weights``, ``log_alpha``, ``lambda``.
    """
    config = config or getattr(student, "pruning", None) or PruningConfig()
    weights = [p for p in student.weight_parameters() if p.requires_grad]
    return [
        {"name": "weights", "params": weights, "lr": config.lr_weights, "weight_decay": 0.0},
        {"name": "log_alpha", "params": student.log_alpha_parameters(), "lr": config.lr_log_alpha, "weight_decay": 0.0},
        {"name": "lambda", "params": list(lagrangian.parameters()), "lr": config.lr_lambda, "weight_decay": 0.0},
    ]
