"""Physical structured pruning of transformers' ``Wav2Vec2BertModel``: modules resized in place (paper §2.6).

One slicer per block of a ``Wav2Vec2BertEncoderLayer``, each taking the indices of the units to keep and, optionally,
the kept gate values to fold into the next weights (the deterministic Hard Concrete mask can be below 1):

* :func:`prune_feed_forward` — ``intermediate_dense`` rows (weight ``(I, D)`` + bias), ``output_dense`` columns
  (weight ``(D, I)``, scaled by the gate values);
* :func:`prune_attention` — rows ``h·d … (h+1)·d − 1`` of ``linear_q/k/v`` for each kept head ``h`` (``d`` the
  head size), the same columns of ``linear_out`` (scaled), ``self_attn.num_heads`` updated (the forward infers the
  head count from the shapes; ``head_size`` and the attention scaling are unchanged);
* :func:`prune_convolution` — for each kept channel ``c`` of the GLU output: ``pointwise_conv1`` rows ``c`` *and*
  ``c + C`` (the GLU's value and gate halves), ``depthwise_conv`` channel ``c`` (``groups`` updated),
  ``depthwise_layer_norm`` over the kept channels only, ``pointwise_conv2`` column ``c`` (scaled).

A block whose units are all pruned is removed, as in the authors' pruned checkpoints (``use_attention: false``,
``use_feed_forward: false``): it holds **no parameters** — the attention or FFN with its output bias, the layer norm
that fed it (``nn.Identity`` now) and, for the conv module, its own ``layer_norm`` — so a checkpoint in the authors'
layout loads strictly. It becomes an :class:`EmptyBlock` that returns zeros, which the layer's residual connection
adds to the input: exactly the authors' forward, which skips the branch. The output bias of a removed block is *not*
a constant left in the residual stream: the gated model drops it too whenever all of a block's gates are 0
(:class:`svlib.pruning.gated.GatedLinear`), so the masked and the pruned model agree exactly, and Eq. (8) counts the
bias with the parameters that stay while at least one unit is kept (:mod:`svlib.pruning.params`). The parameter
count of the result is what :func:`svlib.pruning.params.expected_params` gives for hard gates.

The slicers work on the meta device too: that is how :func:`build_pruned_encoder` counts a structure at full size.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

from svlib.model.encoder import new_hf_encoder
from svlib.model.structure import PrunedStructure, load_structure

logger = logging.getLogger(__name__)

SUPPORTED_POSITION_EMBEDDINGS = ("relative_key", None)
"""Position-embedding types whose attention heads svlib can prune (w2v-BERT 2.0 uses ``relative_key``)."""


class EmptyBlock(nn.Module):
    """A Conformer block whose units are all pruned: no parameters, zero output (the block is removed).

    Returns zeros of shape ``(B, T, D)``, so the layer's residual connection passes its input through unchanged, as
    the authors' layers do when ``use_attention`` / ``use_feed_forward`` is false. As an attention block it returns
    ``(zeros, None)`` like ``Wav2Vec2BertSelfAttention``.

    Args:
        hidden_size: ``D``.
        attention: return a tuple ``(output, attention_weights=None)``.
    """

    def __init__(self, hidden_size: int, attention: bool = False):
        super().__init__()
        self.hidden_size = hidden_size
        self.attention = attention

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, attention={self.attention}"

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        out = hidden_states.new_zeros((*hidden_states.shape[:-1], self.hidden_size))  # -> (B, T, D)
        return (out, None) if self.attention else out


# ----------------------------------------------------------------------------------------------------------------
# new modules from sliced tensors (meta-safe: modules are created on the meta device, then given the tensors)
# ----------------------------------------------------------------------------------------------------------------
def _param(t: torch.Tensor | None, like: torch.Tensor | None) -> nn.Parameter | None:
    if t is None:
        return None
    requires_grad = like.requires_grad if like is not None else True
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=requires_grad)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, old: nn.Module) -> nn.Linear:
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=bias is not None, device="meta", dtype=weight.dtype)
    linear.weight = _param(weight, old.weight)
    linear.bias = _param(bias, old.bias)
    return linear


def _conv1d(weight: torch.Tensor, bias: torch.Tensor | None, old: nn.Conv1d, groups: int = 1) -> nn.Conv1d:
    out_channels, in_per_group, kernel = weight.shape
    conv = nn.Conv1d(
        in_per_group * groups,
        out_channels,
        kernel,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=groups,
        bias=bias is not None,
        device="meta",
        dtype=weight.dtype,
    )
    conv.weight = _param(weight, old.weight)
    conv.bias = _param(bias, old.bias)
    return conv


def _layer_norm(
    weight: torch.Tensor | None, bias: torch.Tensor | None, n: int, eps: float, old: nn.Module
) -> nn.LayerNorm:
    norm = nn.LayerNorm(n, eps=eps, elementwise_affine=weight is not None, bias=bias is not None, device="meta")
    if weight is not None:
        norm.weight = _param(weight, old.weight)
    if bias is not None:
        norm.bias = _param(bias, old.bias)
    return norm


def _scaled_columns(weight: torch.Tensor, columns: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``weight[:, columns]`` times ``scale`` per column (weights ``(out, in)`` or ``(out, in, 1)``)."""
    w = weight[:, columns]
    if scale is not None:
        shape = (1, -1) + (1,) * (w.dim() - 2)
        w = w * scale.to(w.dtype).view(shape)
    return w


def _index(index: torch.Tensor | list[int], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(index, dtype=torch.long).to(device)


# ----------------------------------------------------------------------------------------------------------------
# the three slicers
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def prune_feed_forward(layer: nn.Module, name: str, index, scale: torch.Tensor | None = None) -> int:
    """Keep the intermediate units ``index`` of the macaron FFN ``name`` (``"ffn1"`` or ``"ffn2"``) of ``layer``.

    ``intermediate_dense`` keeps rows ``index`` (weight ``(I, D)``, bias ``(I,)``); ``output_dense`` keeps columns
    ``index`` of its ``(D, I)`` weight, multiplied by ``scale`` (the gate values). No units: the FFN is removed
    (``use_feed_forward: false``): it becomes an :class:`EmptyBlock` and ``<name>_layer_norm`` an ``nn.Identity``,
    with no parameters left, the output bias included.

    Args:
        layer: a ``Wav2Vec2BertEncoderLayer``.
        name: ``"ffn1"`` or ``"ffn2"``.
        index: kept unit indices, ``(k,)``.
        scale: gate values of the kept units, ``(k,)``, folded into ``output_dense``; ``None`` for 1.

    Returns:
        ``k``, the number of units kept.
    """
    if name not in ("ffn1", "ffn2"):
        raise ValueError(f"FFN name must be 'ffn1' or 'ffn2', got {name!r}")
    ffn = getattr(layer, name)
    out = ffn.output_dense
    index = _index(index, out.weight.device)
    if len(index) == 0:
        setattr(layer, name, EmptyBlock(out.weight.shape[0]))
        setattr(layer, f"{name}_layer_norm", nn.Identity())
        return 0
    inter = ffn.intermediate_dense
    ffn.intermediate_dense = _linear(inter.weight[index], None if inter.bias is None else inter.bias[index], inter)
    ffn.output_dense = _linear(_scaled_columns(out.weight, index, scale), out.bias, out)
    return len(index)


@torch.no_grad()
def prune_attention(layer: nn.Module, index, scale: torch.Tensor | None = None) -> int:
    """Keep the attention heads ``index`` of ``layer.self_attn``.

    Head ``h`` owns rows ``h·d … (h+1)·d − 1`` of ``linear_q``, ``linear_k``, ``linear_v`` (weights ``(H·d, D)``,
    biases) and the same columns of ``linear_out`` (weight ``(D, H·d)``), which are multiplied by ``scale[h]``.
    The relative-key ``distance_embedding`` ``(left + right + 1, d)`` is shared by the heads and kept whole. No
    heads: the attention is removed (``use_attention: false``): it becomes an :class:`EmptyBlock` and
    ``self_attn_layer_norm`` an ``nn.Identity``, with no parameters left (``linear_out.bias`` and
    ``distance_embedding`` included).

    Args:
        layer: a ``Wav2Vec2BertEncoderLayer``.
        index: kept head indices, ``(k,)``.
        scale: gate values of the kept heads, ``(k,)``; ``None`` for 1.

    Returns:
        ``k``, the number of heads kept.
    """
    attn = layer.self_attn
    if attn.position_embeddings_type not in SUPPORTED_POSITION_EMBEDDINGS:
        raise ValueError(
            f"pruning attention heads supports position_embeddings_type in {SUPPORTED_POSITION_EMBEDDINGS}, "
            f"not {attn.position_embeddings_type!r}"
        )
    out = attn.linear_out
    index = _index(index, out.weight.device)
    if len(index) == 0:
        layer.self_attn = EmptyBlock(out.weight.shape[0], attention=True)
        layer.self_attn_layer_norm = nn.Identity()
        return 0
    d = attn.head_size
    rows = (index[:, None] * d + torch.arange(d, device=index.device)).reshape(-1)  # -> (k·d,)
    for proj in ("linear_q", "linear_k", "linear_v"):
        old = getattr(attn, proj)
        setattr(attn, proj, _linear(old.weight[rows], None if old.bias is None else old.bias[rows], old))
    head_scale = None if scale is None else scale.repeat_interleave(d)
    attn.linear_out = _linear(_scaled_columns(out.weight, rows, head_scale), out.bias, out)
    attn.num_heads = len(index)
    return len(index)


@torch.no_grad()
def prune_convolution(layer: nn.Module, index, scale: torch.Tensor | None = None) -> int:
    """Keep the GLU output channels ``index`` of ``layer.conv_module``.

    Channel ``c`` of ``C`` owns rows ``c`` and ``c + C`` of ``pointwise_conv1`` (weight ``(2C, D, 1)``: the GLU's
    value and gate halves), channel ``c`` of ``depthwise_conv`` (weight ``(C, 1, K)``, ``groups = C``) and of
    ``depthwise_layer_norm`` (which then normalises over the kept channels only), and column ``c`` of
    ``pointwise_conv2`` (weight ``(D, C, 1)``), multiplied by ``scale[c]``. If the norm is svlib's gated channel norm,
    the activation it took over is given back to ``conv_module.activation``. No channels: the module becomes an
    :class:`EmptyBlock` with no parameters (transformers' ``pointwise_conv2`` has no bias, so nothing of its output
    is lost; the authors never prune a conv module to zero channels).

    Args:
        layer: a ``Wav2Vec2BertEncoderLayer``.
        index: kept channel indices, ``(k,)``.
        scale: gate values of the kept channels, ``(k,)``; ``None`` for 1.

    Returns:
        ``k``, the number of channels kept.
    """
    conv = layer.conv_module
    pw1, dw, norm, pw2 = conv.pointwise_conv1, conv.depthwise_conv, conv.depthwise_layer_norm, conv.pointwise_conv2
    index = _index(index, pw2.weight.device)
    if len(index) == 0:
        layer.conv_module = EmptyBlock(pw2.weight.shape[0])
        return 0
    channels = dw.weight.shape[0]
    k = len(index)
    glu_rows = torch.cat([index, index + channels])  # -> (2k,): value half, then gate half
    conv.pointwise_conv1 = _conv1d(pw1.weight[glu_rows], None if pw1.bias is None else pw1.bias[glu_rows], pw1)
    conv.depthwise_conv = _conv1d(dw.weight[index], None if dw.bias is None else dw.bias[index], dw, groups=k)
    conv.depthwise_layer_norm = _layer_norm(
        None if norm.weight is None else norm.weight[index],
        None if norm.bias is None else norm.bias[index],
        k,
        norm.eps,
        norm,
    )
    if hasattr(norm, "act"):  # svlib's gated channel norm took over the activation
        conv.activation = norm.act
    conv.pointwise_conv2 = _conv1d(_scaled_columns(pw2.weight, index, scale), pw2.bias, pw2)
    return k


# ----------------------------------------------------------------------------------------------------------------
# whole models
# ----------------------------------------------------------------------------------------------------------------
def set_config_structure(config: Wav2Vec2BertConfig, structure: PrunedStructure) -> None:
    """Write the structure keys into a (pruned) model's config, as the authors do.

    ``config.to_dict()`` is then a structure file in the authors' format, and :func:`build_pruned_encoder` can
    rebuild the model's shapes from it.

    Args:
        config: the pruned model's ``Wav2Vec2BertConfig``.
        structure: its structure.
    """
    for key, value in structure.structure_dict().items():
        setattr(config, key, value)


@torch.no_grad()
def apply_structure(model: Wav2Vec2BertModel, structure: PrunedStructure) -> Wav2Vec2BertModel:
    """Resize an unpruned ``Wav2Vec2BertModel`` in place to ``structure``, keeping the first units of each block.

    For building a pruned model of a given shape (random weights, or on the meta device for counting); pruning a
    trained model chooses its units with the gates instead (:meth:`svlib.pruning.gated.GatedW2VBertEncoder.prune_`).

    Args:
        model: an unpruned model whose config matches ``structure.config``.
        structure: units to keep per layer.

    Returns:
        ``model``, resized, with the structure keys written into its config.
    """
    layers = model.encoder.layers
    if len(layers) != structure.num_layers:
        raise ValueError(f"structure has {structure.num_layers} layers, the model {len(layers)}")
    for layer, (f1, f2), heads, channels in zip(layers, structure.ffn, structure.heads, structure.conv):
        prune_feed_forward(layer, "ffn1", torch.arange(f1))
        prune_feed_forward(layer, "ffn2", torch.arange(f2))
        prune_attention(layer, torch.arange(heads))
        prune_convolution(layer, torch.arange(channels))
    set_config_structure(model.config, structure)
    return model


def build_pruned_encoder(
    structure: PrunedStructure | dict | str | None = None, *, meta: bool = False
) -> Wav2Vec2BertModel:
    """Build a pruned ``Wav2Vec2BertModel`` from a structure alone (random weights, or on the meta device).

    The unpruned model of ``structure.config`` is built as svlib builds every encoder
    (:func:`svlib.model.encoder.new_hf_encoder`: randomly initialised by transformers, without the unused
    ``masked_spec_embed``) and resized with :func:`apply_structure`. Load trained weights into the result with
    ``load_state_dict``.

    Args:
        structure: a :class:`~svlib.model.structure.PrunedStructure`, a dict or JSON file in the authors' format,
            or ``None`` for the authors' 80 % structure.
        meta: build on the meta device (no memory, no weights): for counting parameters and MACs at full size.

    Returns:
        The pruned model.
    """
    structure = load_structure(structure)
    return apply_structure(new_hf_encoder(structure.hf_config(), meta=meta), structure)
