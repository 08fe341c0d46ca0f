"""w2v-BERT 2.0's self-attention with its relative position bias looked up instead of materialised.

Every attention layer of w2v-BERT 2.0 adds a relative position bias to its logits (``position_embeddings_type:
relative_key``, Shaw et al. 2018): query ``i`` of head ``h`` scores key ``j`` with ``q_i · E[clip(j − i, −64, 8)]``,
``E`` a table of ``P = 64 + 8 + 1 = 73`` learned vectors of the head size ``d``. transformers computes it as written:
it first builds the ``(T, T, d)`` tensor of the embeddings of every distance, then multiplies it with the queries of
every head (one tiny matrix product per frame). That costs ``T²·d`` memory traffic per layer whatever the number of
heads, which pruning cannot remove: at 30 s (``T = 1,500``) it is a 576 MB tensor per layer, and the pruned encoder,
with most heads gone, spends most of its time there.

:class:`RelativeKeySelfAttention` computes the same numbers the other way round (:func:`relative_key_bias`): the
queries times the ``P`` embeddings, ``(B, H, T, d) · (d, P)``, then the ``(T, T)`` bias gathered from that product by
the clipped distances. The dot products are the same ones (the outputs agree to float rounding,
``tests/test_attention.py``); the MACs are ``P/T`` of the original and no ``T × T × d`` tensor exists. For
``T ≤ P`` (up to 1.5 s) the original product is already the smaller one and is kept. Everything else in the layer is
transformers' own (projections, attention kernel, output), and the parameters are unchanged, so checkpoints, LoRA
and pruning see the same module. :func:`use_lookup_position_bias` installs it in a model; every encoder svlib builds or
loads has it (:mod:`svlib.model.encoder`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import (
    Wav2Vec2BertSelfAttention,
    eager_attention_forward,
)

__all__ = ["RelativeKeySelfAttention", "relative_key_bias", "use_lookup_position_bias"]


def relative_key_bias(query: torch.Tensor, table: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """The relative-key logits ``q_i · E[clip(j − i, −left, right) + left]`` of every query ``i`` and key ``j``.

    Args:
        query: ``(B, H, T, d)`` queries.
        table: ``(left + right + 1, d)`` distance embeddings ``E`` (``distance_embedding.weight``).
        left, right: the largest distance to the left and to the right with its own embedding.

    Returns:
        ``(B, H, T, T)``, unscaled: for ``T > left + right + 1`` the product with the table followed by a gather,
        otherwise transformers' order (the ``(T, T, d)`` embeddings, then the product); equal up to float rounding.
    """
    frames = query.shape[-2]
    positions = torch.arange(frames, device=query.device)
    index = (positions.view(1, -1) - positions.view(-1, 1)).clamp(-left, right) + left  # (T, T): row i, column j
    table = table.to(query.dtype)
    if frames <= table.shape[0]:
        return torch.einsum("bhld,lrd->bhlr", query, table[index])
    scores = torch.matmul(query, table.t())  # (B, H, T, P)
    return torch.gather(scores, -1, index.expand(*query.shape[:-2], frames, frames))


class RelativeKeySelfAttention(Wav2Vec2BertSelfAttention):
    """transformers' ``Wav2Vec2BertSelfAttention`` whose relative-key bias is :func:`relative_key_bias` (module
    docstring). Same parameters and outputs; other position-embedding types run transformers' forward unchanged."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        relative_position_embeddings: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.position_embeddings_type != "relative_key":
            return super().forward(hidden_states, attention_mask, relative_position_embeddings, **kwargs)
        input_shape = hidden_states.shape[:-1]
        heads = (*input_shape, -1, self.head_size)  # the head count follows the (possibly pruned) projections
        query = self.linear_q(hidden_states).view(heads).transpose(1, 2)
        key = self.linear_k(hidden_states).view(heads).transpose(1, 2)
        value = self.linear_v(hidden_states).view(heads).transpose(1, 2)
        bias = relative_key_bias(query, self.distance_embedding.weight, self.left_max_position_embeddings,
                                 self.right_max_position_embeddings) * self.scaling
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, weights = attention(self, query, key, value, attention_mask, dropout=self.dropout.p if self.training
                                    else 0.0, scaling=self.scaling, position_bias=bias, **kwargs)
        return self.linear_out(output.reshape(*input_shape, -1)), weights


def use_lookup_position_bias(model: nn.Module) -> nn.Module:
    """Make every ``Wav2Vec2BertSelfAttention`` of ``model`` a :class:`RelativeKeySelfAttention` (in place, the
    parameters untouched; idempotent); returns ``model``."""
    for module in model.modules():
        if type(module) is Wav2Vec2BertSelfAttention:
            module.__class__ = RelativeKeySelfAttention
    return model
