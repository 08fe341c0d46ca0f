"""The expected parameter count of the student as a differentiable function of its gates (paper §2.6, Eq. 8).

Eq. (8) weights each gate's ``E[L0]`` by the number of parameters ``|g|`` its group owns. For one Conformer layer of
w2v-BERT 2.0 (hidden size ``D``, FFN size ``I``, ``H`` heads of size ``d``, ``C = D`` conv channels, depthwise kernel
``K``; the bias flags are read from the modules):

* **FFN** (each of the two): a kept unit costs ``2D + 1`` (``intermediate_dense`` row + bias, ``output_dense``
  column); its layer norm (``2D``) and ``output_dense.bias`` (``D``) stay while at least one unit is kept.
* **attention**: a kept head costs ``4·D·d + 3·d`` (``linear_q/k/v`` rows + biases, ``linear_out`` columns);
  ``self_attn_layer_norm`` (``2D``), the relative-key ``distance_embedding`` and ``linear_out.bias`` (``D``) stay
  while at least one head is kept.
* **conv**: a kept channel costs ``2D`` (``pointwise_conv1`` rows ``c`` *and* ``c + C``, the GLU's two halves, no
  bias) + ``K`` (depthwise kernel, no bias) + 2 (depthwise layer norm) + ``D`` (``pointwise_conv2`` column, no
  bias); the module's ``layer_norm`` (``2D``) stays while at least one channel is kept.

A block with no unit kept has no parameters at all, as in the authors' pruned checkpoints (``use_attention: false``,
``use_feed_forward: false``): its output bias goes with it (:mod:`svlib.model.resize`).

Everything else (feature projection, ``final_layer_norm``, ``masked_spec_embed`` where a model has it) is a constant.
With ``q_j = E[L0_j]`` the expected count of a block is ``unit·Σ_j q_j + shared·(1 − Π_j (1 − q_j))``: the last
factor is the probability that at least one gate is open (gates are independent), so with hard 0/1 gates the formula
is exactly the parameter count of the physically pruned model (:mod:`svlib.model.resize`). The authors' code
counted ``pointwise_conv1`` once per channel instead of twice; svlib counts both halves.

With hardware alignment (``align`` > 1, :func:`svlib.model.structure.align_units`; beyond the paper) the final
structure keeps a multiple of ``align`` FFN units and conv channels per block, so the count the target constrains is
that of the aligned structure: ``Σ_j q_j`` is replaced by its aligned value in the forward pass, with the gradient of
``Σ_j q_j`` (a straight-through estimate). With 0/1 inputs this is again the exact count of the aligned structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from svlib.model.encoder import new_hf_encoder
from svlib.model.structure import PrunedStructure, align_units, load_structure

BLOCKS = ("ffn1", "ffn2", "attention", "conv")
"""The prunable blocks of a Conformer layer, in the order of the layer's forward."""

_BLOCK_MODULES = {
    "ffn1": ("ffn1", "ffn1_layer_norm"),
    "ffn2": ("ffn2", "ffn2_layer_norm"),
    "attention": ("self_attn", "self_attn_layer_norm"),
    "conv": ("conv_module",),
}


def _numel(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _n(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel()


@dataclass(frozen=True)
class BlockCost:
    """Parameters of one prunable block as a function of its units.

    Args:
        units: number of prunable units in the unpruned block (``I``, ``H`` or ``C``).
        per_unit: parameters each unit owns (Eq. 8's ``|g|``).
        shared: parameters kept while at least one unit is kept (layer norms, the output bias, …); a block with no
            unit has none.
    """

    units: int
    per_unit: int
    shared: int

    @property
    def full(self) -> int:
        """Parameters of the unpruned block."""
        return self.shared + self.units * self.per_unit

    def expected(self, q: torch.Tensor, align: int = 1) -> torch.Tensor:
        """Expected parameters given the per-unit keep probabilities ``q`` (``(units,)``; 0/1 for a hard structure).

        Args:
            q: ``E[L0]`` of each unit's gate, shape ``(units,)``.
            align: count the units as the aligned structure keeps them (module docstring); 1: Eq. (8) as it is.

        Returns:
            ``per_unit·Σ q + shared·(1 − Π(1 − q))``, a scalar tensor.
        """
        if q.shape != (self.units,):
            raise ValueError(f"expected {self.units} keep probabilities, found shape {tuple(q.shape)}")
        q = q.to(torch.float64)  # counts reach 5.8e8: float32 would round them to multiples of 32
        any_kept = 1.0 - torch.prod(1.0 - q)
        kept = q.sum()
        if align > 1:  # the aligned count forward, the gradient of Σ q backward
            aligned = align_units(round(kept.item()), align, self.units)
            kept = kept + (aligned - kept).detach()
        return self.per_unit * kept + self.shared * any_kept


@dataclass(frozen=True)
class LayerCosts:
    """The :class:`BlockCost` of each prunable block of one unpruned Conformer layer (all layers are alike)."""

    ffn: BlockCost
    attention: BlockCost
    conv: BlockCost

    def block(self, name: str) -> BlockCost:
        return self.ffn if name in ("ffn1", "ffn2") else getattr(self, name)

    @classmethod
    def from_layer(cls, layer: nn.Module) -> "LayerCosts":
        """Read the unit costs off an unpruned ``Wav2Vec2BertEncoderLayer`` (its shapes and bias flags).

        The three block formulas are checked against the modules' own parameter counts, so a layer layout they do
        not describe fails here rather than giving wrong counts.

        Args:
            layer: an unpruned (possibly gated) ``Wav2Vec2BertEncoderLayer``, on any device including meta.

        Returns:
            The costs.
        """
        ffn = layer.ffn1
        inter, out = ffn.intermediate_dense, ffn.output_dense
        d_model = out.weight.shape[0]
        ffn_cost = BlockCost(
            units=inter.weight.shape[0],
            per_unit=inter.weight.shape[1] + (1 if inter.bias is not None else 0) + d_model,
            shared=_numel(layer.ffn1_layer_norm) + _n(out.bias),
        )
        attn = layer.self_attn
        d, heads = attn.head_size, attn.linear_q.weight.shape[0] // attn.head_size
        per_head = sum(
            getattr(attn, p).weight.shape[1] * d + (d if getattr(attn, p).bias is not None else 0)
            for p in ("linear_q", "linear_k", "linear_v")
        ) + attn.linear_out.weight.shape[0] * d
        attn_cost = BlockCost(
            units=heads,
            per_unit=per_head,
            shared=_numel(layer.self_attn_layer_norm)
            + _numel(getattr(attn, "distance_embedding", None))
            + _n(attn.linear_out.bias),
        )
        conv = layer.conv_module
        pw1, dw, norm, pw2 = conv.pointwise_conv1, conv.depthwise_conv, conv.depthwise_layer_norm, conv.pointwise_conv2
        channels = dw.weight.shape[0]
        per_channel = (
            2 * (pw1.weight.shape[1] * pw1.weight.shape[2] + (1 if pw1.bias is not None else 0))
            + dw.weight.shape[1] * dw.weight.shape[2] + (1 if dw.bias is not None else 0)
            + (1 if norm.weight is not None else 0) + (1 if norm.bias is not None else 0)
            + pw2.weight.shape[0] * pw2.weight.shape[2]
        )
        conv_cost = BlockCost(units=channels, per_unit=per_channel, shared=_numel(conv.layer_norm) + _n(pw2.bias))
        costs = cls(ffn=ffn_cost, attention=attn_cost, conv=conv_cost)
        for name in BLOCKS:
            actual = sum(_numel(getattr(layer, m)) for m in _BLOCK_MODULES[name]) - _gate_numel(layer, name)
            if actual != costs.block(name).full:
                raise ValueError(
                    f"the {name} block of this layer has {actual} parameters, but svlib's formula gives "
                    f"{costs.block(name).full}: unsupported Wav2Vec2BertEncoderLayer layout"
                )
        return costs


def _gate_numel(layer: nn.Module, name: str) -> int:
    """Gate parameters (``log_alpha``) inside a block of a gated layer, which are not model parameters."""
    return sum(
        p.numel()
        for m in _BLOCK_MODULES[name]
        for n, p in getattr(layer, m).named_parameters()
        if n.endswith("log_alpha")
    )


def prunable_params(layer: nn.Module) -> int:
    """Parameters of the prunable blocks of one layer (both FFNs with their norms, attention, conv module).

    Args:
        layer: a ``Wav2Vec2BertEncoderLayer``, gated or not.

    Returns:
        Their count, gate parameters excluded.
    """
    return sum(_numel(getattr(layer, m)) - _gate_numel(layer, b) for b in BLOCKS for m in _BLOCK_MODULES[b])


def constant_params(model: nn.Module) -> int:
    """Parameters of a ``Wav2Vec2BertModel`` that pruning never removes (feature projection, final layer norms, …).

    Args:
        model: an unpruned ``Wav2Vec2BertModel``, gated or not.

    Returns:
        All parameters minus the prunable blocks' and the gates'.
    """
    gates = sum(p.numel() for n, p in model.named_parameters() if n.endswith("log_alpha"))
    total = sum(p.numel() for p in model.parameters()) - gates
    return total - sum(prunable_params(layer) for layer in model.encoder.layers)


def expected_params(
    costs: LayerCosts, constant: int, keep: Sequence[dict[str, torch.Tensor]], align: int = 1
) -> torch.Tensor:
    """Expected number of parameters of the student, ``E[||θ||_0]`` (Eq. 8) plus the unprunable constant.

    Args:
        costs: per-block costs of an unpruned layer (:meth:`LayerCosts.from_layer`).
        constant: parameters pruning never removes (:func:`constant_params`).
        keep: one dict per layer mapping each of :data:`BLOCKS` to its gates' ``E[L0]`` (``(units,)``); 0/1
            indicators for a hard structure.
        align: FFN units and conv channels counted as the structure aligned to this multiple keeps them (heads are
            not aligned; module docstring); 1 (the paper): Eq. (8) as it is.

    Returns:
        A float64 scalar tensor, differentiable in the keep probabilities; exact for 0/1 inputs.
    """
    total = torch.tensor(float(constant), dtype=torch.float64)
    for layer_keep in keep:
        for name in BLOCKS:
            block_align = 1 if name == "attention" else align
            total = total + costs.block(name).expected(layer_keep[name], block_align)
    return total


def structure_keep(structure, costs: LayerCosts) -> list[dict[str, torch.Tensor]]:
    """0/1 keep indicators of a structure (its first units kept), in the form :func:`expected_params` takes.

    Args:
        structure: a :class:`~svlib.model.structure.PrunedStructure`.
        costs: the unpruned layer's costs (for the unit counts).

    Returns:
        One dict of indicator vectors per layer.
    """

    def hard(k: int, n: int) -> torch.Tensor:
        return (torch.arange(n) < k).to(torch.float64)

    return [
        {
            "ffn1": hard(f1, costs.ffn.units),
            "ffn2": hard(f2, costs.ffn.units),
            "attention": hard(h, costs.attention.units),
            "conv": hard(c, costs.conv.units),
        }
        for (f1, f2), h, c in zip(structure.ffn, structure.heads, structure.conv)
    ]


def structure_params(structure) -> int:
    """Exact parameter count of a pruned structure, from the formula of Eq. (8) with hard gates.

    The unpruned model of ``structure.config`` is built on the meta device to read the unit costs and constant.

    Args:
        structure: a :class:`~svlib.model.structure.PrunedStructure`, a dict or file in the authors' format.

    Returns:
        The number of parameters of the pruned ``Wav2Vec2BertModel``.
    """
    structure = load_structure(structure)
    teacher = new_hf_encoder(structure.hf_config(), meta=True)  # as build_pruned_encoder builds it
    costs = LayerCosts.from_layer(teacher.encoder.layers[0])
    count = expected_params(costs, constant_params(teacher), structure_keep(structure, costs))
    return int(round(count.item()))


def structure_sparsity(structure) -> float:
    """Sparsity of a structure: ``1 − params(pruned) / params(unpruned)`` for the model of its config.

    Args:
        structure: a :class:`~svlib.model.structure.PrunedStructure`, a dict or file in the authors' format.

    Returns:
        The fraction of the encoder's parameters removed (about 0.786 for the authors' "≈ 80 %" structure).
    """
    structure = load_structure(structure)
    return 1.0 - structure_params(structure) / structure_params(PrunedStructure.full(structure.config))
