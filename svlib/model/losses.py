"""Classification losses for speaker training: additive angular margin softmax (ArcFace) and a margin schedule.

The paper (§3.3) trains with ArcFace (ref. [32]) at scale s = 32 and margin m = 0.2 in stages 1–2 (PTM-freeze
training, joint fine-tuning) and m = 0.5 in the Large-Margin Fine-Tune stage (LMFT, ref. [33]).
:class:`ArcMarginProduct` returns the scaled logits; apply ``torch.nn.functional.cross_entropy`` to them.
:class:`MarginScheduler` gives the margin as a function of the (fractional) epoch.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

MARGIN_INCREASE_TYPES: tuple[str, ...] = ("exp", "linear", "constant")

__all__ = ["ArcMarginProduct", "MarginScheduler", "MARGIN_INCREASE_TYPES"]


class ArcMarginProduct(nn.Module):
    """Additive angular margin product (ArcFace, paper ref. [32]; insightface form, ``easy_margin=False``).

    With L2-normalised embeddings ``e`` and class weights ``w_j``, ``cos θ_j = e·w_j``. For the target class y
    the logit uses ``φ = cos(θ_y + m) = cos θ_y · cos m − sin θ_y · sin m`` with
    ``sin θ = sqrt(clamp(1 − cos² θ, 0, 1))``. So that the target logit stays monotone in θ when ``θ + m > π``:

    * ``easy_margin=False`` (default, the paper's setting): where ``cos θ > cos(π − m)`` use φ, else
      ``cos θ − sin(π − m)·m``;
    * ``easy_margin=True``: where ``cos θ > 0`` use φ, else ``cos θ``.

    Logits: ``s · (onehot · φ + (1 − onehot) · cos θ)``. Paper: ``s = 32``, ``m = 0.2`` (stages 1–2), ``m = 0.5``
    (LMFT). The cosine computation runs in float32 even under autocast.

    Shapes: ``embeddings`` (B, E), ``labels`` (B,) int64 in ``[0, N)`` → logits (B, N).
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        scale: float = 32.0,
        margin: float = 0.2,
        easy_margin: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim < 1 or num_classes < 1:
            raise ValueError(
                f"ArcMarginProduct got embed_dim={embed_dim}, num_classes={num_classes}; expected positive integers"
            )
        if scale <= 0:
            raise ValueError(f"ArcMarginProduct scale={scale}; expected a positive float (paper: 32)")
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.scale = float(scale)
        self.easy_margin = easy_margin
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.set_margin(margin)

    def set_margin(self, margin: float) -> None:
        """Set the angular margin m (radians) and update the cached constants cos m, sin m, cos(π−m), sin(π−m)·m."""
        margin = float(margin)
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace margin={margin}; expected 0 <= margin < pi/2 (paper: 0.2, LMFT 0.5)")
        self.margin = margin
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, scale={self.scale}, "
            f"margin={self.margin}, easy_margin={self.easy_margin}"
        )

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings have shape {tuple(embeddings.shape)}; expected (B, {self.embed_dim})")
        if labels.shape != (embeddings.shape[0],) or labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"labels have shape {tuple(labels.shape)} and dtype {labels.dtype}; "
                f"expected integer ({embeddings.shape[0]},)"
            )
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
            sine = torch.sqrt(torch.clamp(1.0 - cosine * cosine, 0.0, 1.0))
            phi = cosine * self.cos_m - sine * self.sin_m
            if self.easy_margin:
                phi = torch.where(cosine > 0, phi, cosine)
            else:
                phi = torch.where(cosine > self.th, phi, cosine - self.mm)
            one_hot = F.one_hot(labels.long(), self.num_classes).to(cosine.dtype)
            return self.scale * (one_hot * phi + (1.0 - one_hot) * cosine)


class MarginScheduler:
    """Margin as a function of the (fractional) epoch, for margin warm-up and for switching to the LMFT margin.

    ``margin_at(epoch)`` is ``initial_margin`` for ``epoch < increase_start_epoch``, ``final_margin`` for
    ``epoch >= fix_start_epoch``, and in between ``initial + (final − initial) · r(p)`` with
    ``p = (epoch − increase_start_epoch) / (fix_start_epoch − increase_start_epoch)`` in [0, 1) and

    * ``'linear'``: ``r(p) = p``;
    * ``'exp'``: ``r(p) = (1 − exp(−k·p)) / (1 − exp(−k))`` with ``k = exp_rate`` (default 5): a concave ramp that
      rises fast first (r(0.2) ≈ 0.64 at k = 5), with r(0) = 0 and r(1) = 1 exactly;
    * ``'constant'``: ``r(p) = 0``: the margin stays at ``initial_margin`` and steps to ``final_margin`` at
      ``fix_start_epoch`` (for a fixed margin, as in each of the paper's stages, set ``initial == final``).

    Paper (§3.3): m = 0.2 in stages 1–2 and m = 0.5 in LMFT, each constant within its stage.
    """

    def __init__(
        self,
        initial_margin: float,
        final_margin: float,
        increase_start_epoch: float,
        fix_start_epoch: float,
        increase_type: str = "exp",
        exp_rate: float = 5.0,
    ) -> None:
        if increase_type not in MARGIN_INCREASE_TYPES:
            raise ValueError(
                f"MarginScheduler increase_type={increase_type!r}; expected one of {MARGIN_INCREASE_TYPES}"
            )
        if initial_margin < 0 or final_margin < 0:
            raise ValueError(
                f"MarginScheduler margins initial={initial_margin}, final={final_margin}; expected non-negative"
            )
        if fix_start_epoch < increase_start_epoch:
            raise ValueError(
                f"MarginScheduler fix_start_epoch={fix_start_epoch} < increase_start_epoch={increase_start_epoch}; "
                "expected fix_start_epoch >= increase_start_epoch"
            )
        if exp_rate <= 0:
            raise ValueError(f"MarginScheduler exp_rate={exp_rate}; expected a positive float")
        self.initial_margin = float(initial_margin)
        self.final_margin = float(final_margin)
        self.increase_start_epoch = float(increase_start_epoch)
        self.fix_start_epoch = float(fix_start_epoch)
        self.increase_type = increase_type
        self.exp_rate = float(exp_rate)

    def _ramp(self, progress: float) -> float:
        """Fraction r(p) of the way from initial to final margin at progress p in [0, 1]."""
        if self.increase_type == "linear":
            return progress
        if self.increase_type == "exp":
            k = self.exp_rate
            return (1.0 - math.exp(-k * progress)) / (1.0 - math.exp(-k))
        return 0.0

    def margin_at(self, epoch: float) -> float:
        """Return the margin at a (fractional) epoch."""
        epoch = float(epoch)
        if epoch >= self.fix_start_epoch:
            return self.final_margin
        if epoch < self.increase_start_epoch:
            return self.initial_margin
        progress = (epoch - self.increase_start_epoch) / (self.fix_start_epoch - self.increase_start_epoch)
        return self.initial_margin + (self.final_margin - self.initial_margin) * self._ramp(progress)

    def step(self, loss_module: nn.Module, epoch: float) -> float:
        """Set ``loss_module``'s margin (via its ``set_margin``) to :meth:`margin_at` ``(epoch)`` and return it."""
        set_margin = getattr(loss_module, "set_margin", None)
        if not callable(set_margin):
            raise ValueError(
                f"MarginScheduler.step got {type(loss_module).__name__}; expected a module with set_margin(m)"
            )
        margin = self.margin_at(epoch)
        set_margin(margin)
        logger.debug("epoch %.3f: margin %.4f", epoch, margin)
        return margin
