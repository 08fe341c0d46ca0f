"""The gated w2v-BERT 2.0 student: Hard Concrete gates attached to transformers' modules (paper §2.6, Eq. 6).

Gates are attached by replacing three small modules per Conformer layer with wrappers that share the original
parameters (so state-dict keys stay transformers' keys, plus ``….gate.log_alpha``); transformers' forward code runs
unchanged:

* **FFN units** (``ffn1``, ``ffn2``; ``I`` gates each): ``output_dense`` becomes a :class:`GatedLinear` that multiplies
  its input — the intermediate activations after ``intermediate_act_fn`` — by the gates, unit by unit.
* **Attention heads** (``H`` gates): ``self_attn.linear_out`` becomes a :class:`GatedLinear` that multiplies each
  head's attention output (``d_head`` consecutive input columns) by its gate.
* **Conv channels** (``C = D`` gates over the GLU output channels): ``conv_module.depthwise_layer_norm`` becomes a
  :class:`GatedChannelNorm` computing ``z · act(LN_kept(x))`` and ``conv_module.activation`` becomes
  ``nn.Identity``. The gate thus sits after the depthwise conv, the depthwise layer norm and the activation, just
  before ``pointwise_conv2``, whose columns absorb the kept gate values when pruning. Channel ``c`` is fed by
  ``pointwise_conv1`` rows ``c`` and ``c + C`` (GLU), so gating it makes those rows, depthwise channel ``c`` and
  the layer norm's ``c`` entries dead weight.

Why the layer norm needs care: the depthwise layer norm mixes channels through its mean and variance, so removing
channels changes the statistics of the others. :class:`GatedChannelNorm` therefore computes them over the kept
channels only:

* eval (deterministic mask): weights ``w_c = 1[z_c > 0]`` — the statistics over the kept channels, exactly what the
  physically pruned ``LayerNorm(k)`` computes;
* training (sampled ``z``): weights ``w_c = z_c`` — a differentiable relaxation that equals the kept-channel
  statistics whenever the sample is 0/1 (most of the mass once ``log α`` moves away from 0) and lets a channel's
  influence on the statistics fade continuously as its gate closes, instead of jumping when it hits 0.

The statistics are computed in float32 (as ``nn.LayerNorm`` does under autocast).

A block whose gates are all 0 is a removed block (the authors' ``use_attention: false`` / ``use_feed_forward:
false``), and its pruned form has no parameters at all (:mod:`svlib.model.resize`). So that the gated model
computes exactly what that pruned model computes, :class:`GatedLinear` adds its output bias only while at least one
of its gates is non-zero: with every gate closed, the FFN or attention output is 0 and the residual connection
passes the input through, as in the authors' forward. This holds for the deterministic mask (eval) and for samples
(training), and matches Eq. (8)'s count, where the bias is kept with probability ``1 − Π_j (1 − E[L0_j])``
(:mod:`svlib.pruning.params`). The conv module's ``pointwise_conv2`` has no bias in transformers.

Explained in the book chapters "Hard Concrete gates" and "Lagrangian pruning".
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Wav2Vec2BertModel

from svlib.model.encoder import W2VBertEncoder
from svlib.pruning.config import PruningConfig
from svlib.pruning.hardconcrete import HardConcrete
from svlib.pruning.params import BLOCKS, LayerCosts, constant_params, expected_params
from svlib.model.resize import (
    SUPPORTED_POSITION_EMBEDDINGS,
    prune_attention,
    prune_convolution,
    prune_feed_forward,
    set_config_structure,
)
from svlib.model.structure import PrunedStructure, is_structure_dict

logger = logging.getLogger(__name__)


class GatedLinear(nn.Module):
    """A linear layer whose input units are multiplied by Hard Concrete gates (Eq. 6: ``θ = θ̂ ⊙ z``).

    Takes over the ``weight`` ``(out, n·unit_size)`` and ``bias`` of ``linear`` (the same parameter objects). Input
    columns ``j·unit_size … (j+1)·unit_size − 1`` belong to gate ``j``. The bias is added only while at least one
    gate is non-zero: with all gates 0 the block is removed and the output is exactly 0 (see the module docstring).

    Args:
        linear: the ``nn.Linear`` to gate (``output_dense`` of an FFN, ``linear_out`` of the attention).
        gate: ``n`` gates.
        unit_size: input columns per gate (1 for FFN units, ``d_head`` for heads).
    """

    def __init__(self, linear: nn.Linear, gate: HardConcrete, unit_size: int = 1):
        super().__init__()
        if linear.in_features != gate.n * unit_size:
            raise ValueError(f"{gate.n} gates of {unit_size} columns do not cover {linear.in_features} inputs")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.gate = gate
        self.unit_size = unit_size

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, unit_size={self.unit_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.gate()  # -> (n,)
        bias = self.bias
        if bias is not None:  # a removed block (every gate 0) has no output bias; a product, not an `if`: no host sync
            bias = bias * (z > 0).any().to(bias.dtype)
        if self.unit_size > 1:
            z = z.repeat_interleave(self.unit_size)  # -> (n·unit_size,)
        return F.linear(x * z.to(x.dtype), self.weight, bias)


class GatedChannelNorm(nn.Module):
    """The conv module's depthwise layer norm over the kept channels, its activation, then the channel gates.

    ``y_c = z_c · act((x_c − μ) / sqrt(σ² + eps) · weight_c + bias_c)`` where μ and σ² are the mean and
    variance over channels weighted by ``1[z > 0]`` in eval mode and by ``z`` in training mode (see the module
    docstring). Replaces ``conv_module.depthwise_layer_norm``; ``conv_module.activation`` must become
    ``nn.Identity``.

    Args:
        norm: the ``nn.LayerNorm`` over ``C`` channels (its parameters are taken over).
        act: the conv module's activation (``conv_module.activation``).
        gate: ``C`` gates.
    """

    def __init__(self, norm: nn.LayerNorm, act: nn.Module, gate: HardConcrete):
        super().__init__()
        (channels,) = norm.normalized_shape
        if channels != gate.n:
            raise ValueError(f"{gate.n} gates for a layer norm over {channels} channels")
        self.channels = channels
        self.eps = norm.eps
        self.weight = norm.weight
        self.bias = norm.bias
        self.act = act
        self.gate = gate

    def extra_repr(self) -> str:
        return f"channels={self.channels}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, C)`` depthwise-conv output; returns ``(B, T, C)``."""
        z = self.gate()  # -> (C,)
        w = z if self.training else (z > 0).to(z.dtype)
        x32, w = x.float(), w.float()
        count = w.sum().clamp_min(torch.finfo(torch.float32).tiny)
        mean = (x32 * w).sum(-1, keepdim=True) / count  # -> (B, T, 1)
        var = ((x32 - mean).square() * w).sum(-1, keepdim=True) / count
        y = (x32 - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        return self.act(y.to(x.dtype)) * z.to(x.dtype)


def _attach_gates(layer: nn.Module, config: PruningConfig, device: torch.device) -> None:
    def gate(n: int, drop: float) -> HardConcrete:
        hc = HardConcrete(n, drop, config.init_std, config.beta, config.gamma, config.zeta)
        return hc.to(device)

    for name in ("ffn1", "ffn2"):
        ffn = getattr(layer, name)
        ffn.output_dense = GatedLinear(ffn.output_dense, gate(ffn.output_dense.in_features, config.init_drop_ffn))
    attn = layer.self_attn
    heads = attn.linear_out.in_features // attn.head_size
    attn.linear_out = GatedLinear(attn.linear_out, gate(heads, config.init_drop_heads), unit_size=attn.head_size)
    conv = layer.conv_module
    if conv.pointwise_conv2.bias is not None:
        raise ValueError(
            "conv_module.pointwise_conv2 has a bias: svlib's conv gates cannot remove it with the last channel "
            "(transformers' Wav2Vec2BertConvolutionModule has none)"
        )
    channels = conv.depthwise_layer_norm.normalized_shape[0]
    conv_gate = gate(channels, config.init_drop_conv)
    conv.depthwise_layer_norm = GatedChannelNorm(conv.depthwise_layer_norm, conv.activation, conv_gate)
    conv.activation = nn.Identity()


class GatedW2VBertEncoder(W2VBertEncoder):
    """A w2v-BERT 2.0 student with Hard Concrete gates on FFN units, attention heads and conv channels.

    Behaves like :class:`~svlib.model.encoder.W2VBertEncoder` (returns the ``L+1`` hidden states); the gates sample in
    training mode and use their deterministic mask in eval mode. The model is gated in place; use
    :meth:`from_encoder` to gate a copy of a teacher.

    Args:
        model: an unpruned transformers ``Wav2Vec2BertModel`` without LoRA (merge it first).
        config: gate initialisation and pruning hyper-parameters; the paper's by default.
    """

    def __init__(self, model: Wav2Vec2BertModel, config: PruningConfig | None = None):
        if hasattr(model, "peft_config"):
            raise ValueError("the student has LoRA attached: merge it (W2VBertEncoder.merge_lora) before gating")
        if any(n.endswith("log_alpha") for n, _ in model.named_parameters()):
            raise ValueError("this Wav2Vec2BertModel is already gated")
        if is_structure_dict(model.config.to_dict()):
            raise ValueError("this Wav2Vec2BertModel is already pruned (its config has a structure); gate an unpruned one")
        if getattr(model.config, "position_embeddings_type", None) not in SUPPORTED_POSITION_EMBEDDINGS:
            raise ValueError(
                f"gating supports position_embeddings_type in {SUPPORTED_POSITION_EMBEDDINGS}, "
                f"not {model.config.position_embeddings_type!r}"
            )
        super().__init__(model)
        self.pruning = config or PruningConfig()
        self.costs = LayerCosts.from_layer(model.encoder.layers[0])
        self.constant = constant_params(model)
        self.teacher_params = sum(p.numel() for p in model.parameters())
        device = next(model.parameters()).device
        for layer in model.encoder.layers:
            _attach_gates(layer, self.pruning, device)
        self._pruned = False

    @classmethod
    def from_encoder(
        cls, encoder: W2VBertEncoder | Wav2Vec2BertModel, config: PruningConfig | None = None
    ) -> "GatedW2VBertEncoder":
        """Gate a deep copy of a (teacher) encoder; the teacher is left untouched.

        Args:
            encoder: a :class:`~svlib.model.encoder.W2VBertEncoder` without LoRA, or a bare ``Wav2Vec2BertModel``.
            config: pruning hyper-parameters.

        Returns:
            The gated student.
        """
        if isinstance(encoder, W2VBertEncoder):
            if encoder.lora is not None:
                raise ValueError("the teacher has LoRA attached: merge it (merge_lora) before building the student")
            encoder = encoder.model
        return cls(copy.deepcopy(encoder), config)

    # -- gates ---------------------------------------------------------------------------------------------------
    def _check_not_pruned(self) -> None:
        if self._pruned:
            raise RuntimeError("this gated encoder has been pruned (prune_); use the encoder prune_ returned")

    def gates(self) -> list[dict[str, HardConcrete]]:
        """The gates of each layer, ``{"ffn1", "ffn2", "attention", "conv"}`` → ``HardConcrete`` module."""
        self._check_not_pruned()
        return [
            {
                "ffn1": layer.ffn1.output_dense.gate,
                "ffn2": layer.ffn2.output_dense.gate,
                "attention": layer.self_attn.linear_out.gate,
                "conv": layer.conv_module.depthwise_layer_norm.gate,
            }
            for layer in self.model.encoder.layers
        ]

    def log_alpha_parameters(self) -> list[nn.Parameter]:
        """The gates' ``log α`` (their own optimizer group)."""
        return [g.log_alpha for layer in self.gates() for g in layer.values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """The student's model parameters (everything but ``log α``)."""
        return [p for n, p in self.model.named_parameters() if not n.endswith("log_alpha")]

    # -- Eq. (8) and the sparsity ------------------------------------------------------------------------------------
    def expected_params(self) -> torch.Tensor:
        """Expected parameter count of the student from the gates' ``E[L0]`` (Eq. 8), differentiable, float64."""
        keep = [{name: gates[name].l0() for name in BLOCKS} for gates in self.gates()]
        return expected_params(self.costs, self.constant, keep, align=self.pruning.align)

    def expected_sparsity(self) -> torch.Tensor:
        """``s = 1 − E[params(student)] / params(teacher)``, a differentiable float32 scalar."""
        return (1.0 - self.expected_params() / self.teacher_params).float()

    # -- structure and pruning -----------------------------------------------------------------------------------
    @torch.no_grad()
    def deterministic_masks(self) -> list[dict[str, torch.Tensor]]:
        """The eval-mode gate values of each layer (what pruning keeps and folds), per block."""
        return [{name: g.deterministic_mask() for name, g in gates.items()} for gates in self.gates()]

    def structure(self) -> PrunedStructure:
        """The structure the deterministic masks select (units with a non-zero mask are kept; a block with none is
        removed, ``use_attention`` / ``use_feed_forward`` false), aligned when ``pruning.align`` > 1
        (:meth:`~svlib.model.structure.PrunedStructure.aligned`)."""
        masks = self.deterministic_masks()
        count = [{name: int((m > 0).sum()) for name, m in layer.items()} for layer in masks]
        structure = PrunedStructure(
            ffn=[(c["ffn1"], c["ffn2"]) for c in count],
            heads=[c["attention"] for c in count],
            conv=[c["conv"] for c in count],
            config=self.config.to_dict(),
            gates=self.pruning.gate_settings(),
        )
        return structure.aligned(self.pruning.align)

    def extract_structure(self) -> dict:
        """The current deterministic structure as a dict in the authors' JSON format."""
        return self.structure().to_dict()

    @torch.no_grad()
    def prune_(self) -> W2VBertEncoder:
        """Physically prune the student in place with the deterministic masks; the gates are removed.

        Kept units are those with a non-zero mask; their soft mask values (``sigmoid(0.8 · log α / β)``, see
        :meth:`~svlib.pruning.hardconcrete.HardConcrete.deterministic_mask`) are folded into ``output_dense``,
        ``linear_out`` and ``pointwise_conv2`` columns, and a block with no kept unit is removed with all its
        parameters (see :mod:`svlib.model.resize`). In eval mode only.

        With ``pruning.align`` > 1 each block keeps the count of :meth:`structure`, the units with the largest
        ``log α``: rounding down drops the weakest kept units, rounding up adds the strongest closed ones with the
        value 0 folded in (their output columns start at zero, so FFN blocks compute what the masked model computes;
        the conv module's layer norm then also averages over the added channels). Stage 2's distillation trains them.

        Returns:
            A :class:`~svlib.model.encoder.W2VBertEncoder` around the pruned ``Wav2Vec2BertModel`` (this object's model;
            its config carries the structure keys). This gated encoder is unusable afterwards.
        """
        self._check_not_pruned()
        if self.training:
            raise RuntimeError("prune_() uses the deterministic masks: call .eval() first")
        structure = self.structure()
        masks = self.deterministic_masks()
        counts = [{"ffn1": f1, "ffn2": f2, "attention": h, "conv": c}
                  for (f1, f2), h, c in zip(structure.ffn, structure.heads, structure.conv)]
        for layer, mask, gates, count in zip(self.model.encoder.layers, masks, self.gates(), counts):

            def kept(name: str):
                if count[name] == int((mask[name] > 0).sum()):  # no alignment change: the non-zero mask
                    index = mask[name].nonzero().squeeze(1)
                else:  # the aligned count: the top units by log α, ties to the lower index (as the mask's rule)
                    order = torch.sort(-gates[name].log_alpha.detach(), stable=True).indices
                    index = order[: count[name]].sort().values
                return index, mask[name][index]

            prune_feed_forward(layer, "ffn1", *kept("ffn1"))
            prune_feed_forward(layer, "ffn2", *kept("ffn2"))
            prune_attention(layer, *kept("attention"))
            prune_convolution(layer, *kept("conv"))
        set_config_structure(self.model.config, structure)
        self._pruned = True
        logger.info("pruned the student to %s parameters", f"{sum(p.numel() for p in self.model.parameters()):,}")
        return W2VBertEncoder(self.model)
