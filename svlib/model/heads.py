"""Speaker heads that turn the encoder's stacked hidden states into a speaker embedding (paper §2.2–2.4, §3.2).

Every head takes ``hidden_states`` of shape ``(L+1, B, T, D)`` — the stacked ``[h_0, ..., h_L]`` of Eq. 1
(``L+1 = 25`` and ``D = 1024`` for w2v-BERT 2.0) — and an optional boolean ``mask`` of shape ``(B, T)``
(``True`` = valid frame), and returns embeddings of shape ``(B, E)`` (``E = 256`` in the paper).

Three heads, selected by :attr:`HeadConfig.type` and built with :func:`build_head`:

* ``'wavg_ecapa'`` — :class:`WeightedAverageECAPAHead`: layer-wise weighted average (Eq. 2) followed by the
  small ECAPA-TDNN (C = 512) of the WavLM paper. 8,807,385 parameters at full size ("8.8M").
* ``'mfa'`` — :class:`MFAHead`: concatenation of all states, attentive statistics pooling and a linear layer
  (Eq. 3). 65,564,928 parameters ("65.6M").
* ``'adapter_mfa'`` — :class:`AdapterMFAHead`: a :class:`LayerAdapter` per state before the MFA (§2.4).
  6,160,640 parameters ("6.2M").

Masking: the attentive statistics pooling and the SE blocks only look at valid frames. Convolutions with a
kernel wider than one frame (ECAPA-TDNN) and ``InstanceNorm1d`` still see padded frames, so only the MFA heads
give padding-independent embeddings (in eval mode, where BatchNorm uses running statistics).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

HEAD_TYPES: tuple[str, ...] = ("wavg_ecapa", "mfa", "adapter_mfa")

__all__ = [
    "HEAD_TYPES",
    "HeadConfig",
    "build_head",
    "LayerWeightedAverage",
    "AttentiveStatisticsPooling",
    "TDNNBlock",
    "Res2NetBlock",
    "SqueezeExcitation",
    "SERes2NetBlock",
    "ECAPATDNN",
    "WeightedAverageECAPAHead",
    "MFAHead",
    "LayerAdapter",
    "AdapterMFAHead",
]


@dataclass
class HeadConfig:
    """Configuration of a speaker head.

    Attributes:
        type: ``'wavg_ecapa'`` (§2.2), ``'mfa'`` (§2.3, Eq. 3) or ``'adapter_mfa'`` (§2.4).
        num_states: number of stacked hidden states ``L+1`` (25 for w2v-BERT 2.0).
        hidden_size: encoder hidden size ``D`` (1024).
        embed_dim: speaker embedding size ``E`` (256, §3.2).
        adapter_dim: Layer Adapter hidden size ``d'`` (128, §3.2); also the ASP hidden size of ``adapter_mfa``.
        ecapa_channels: ECAPA-TDNN channels ``C`` (512, the "small" ECAPA of the WavLM paper).
        ecapa_attention_channels: ASP attention channels inside ECAPA-TDNN (128).
        ecapa_se_channels: squeeze-excitation bottleneck (128).
        ecapa_scale: Res2Net scale (8); must divide ``ecapa_channels``.
    """

    type: str
    num_states: int = 25
    hidden_size: int = 1024
    embed_dim: int = 256
    adapter_dim: int = 128
    ecapa_channels: int = 512
    ecapa_attention_channels: int = 128
    ecapa_se_channels: int = 128
    ecapa_scale: int = 8

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise ValueError(f"HeadConfig.type={self.type!r} is not supported; expected one of {HEAD_TYPES}")
        for field in dataclasses.fields(self):
            if field.name == "type":
                continue
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HeadConfig.{field.name}={value!r} is invalid; expected a positive integer")
        if self.ecapa_scale < 2 or self.ecapa_channels % self.ecapa_scale != 0:
            raise ValueError(
                f"HeadConfig.ecapa_scale={self.ecapa_scale} is invalid for ecapa_channels={self.ecapa_channels}; "
                "expected an integer >= 2 that divides ecapa_channels"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a plain JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HeadConfig":
        """Build a configuration from a dict such as :meth:`to_dict` returns; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"HeadConfig.from_dict got unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**dict(data))


def _check_inputs(hidden_states: Tensor, mask: Tensor | None, num_states: int, hidden_size: int) -> None:
    """Raise ``ValueError`` unless ``hidden_states`` is ``(num_states, B, T, hidden_size)`` and ``mask`` (B, T)."""
    if hidden_states.dim() != 4 or hidden_states.shape[0] != num_states or hidden_states.shape[-1] != hidden_size:
        raise ValueError(
            f"hidden_states has shape {tuple(hidden_states.shape)}; expected ({num_states}, B, T, {hidden_size})"
        )
    if mask is not None:
        expected = tuple(hidden_states.shape[1:3])
        if mask.dtype != torch.bool or tuple(mask.shape) != expected:
            raise ValueError(f"mask has shape {tuple(mask.shape)} and dtype {mask.dtype}; expected bool {expected}")


def _weighted_mean_std(x: Tensor, weights: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Weighted mean and std over time: ``x`` (B, C, T), ``weights`` (B, C|1, T) summing to 1 over T → 2 × (B, C).

    ``std = sqrt(clamp(E[x²] − μ², min=eps))``.
    """
    mean = (x * weights).sum(dim=-1)
    second = (x * x * weights).sum(dim=-1)
    std = torch.sqrt(torch.clamp(second - mean * mean, min=eps))
    return mean, std


class LayerWeightedAverage(nn.Module):
    """Layer-wise weighted average of the hidden states (paper Eq. 2, §2.2).

    ``H = Σ_i softmax(w)_i · h_i`` with one learnable weight per state, initialised to ones (so the initial
    average is the plain mean).

    Shapes: ``(L+1, B, T, D)`` → ``(B, T, D)``.
    """

    def __init__(self, num_states: int) -> None:
        super().__init__()
        self.num_states = num_states
        self.weights = nn.Parameter(torch.ones(num_states))

    def forward(self, hidden_states: Tensor) -> Tensor:
        if hidden_states.shape[0] != self.num_states:
            raise ValueError(
                f"hidden_states has {hidden_states.shape[0]} states (shape {tuple(hidden_states.shape)}); "
                f"expected {self.num_states}"
            )
        norm_weights = torch.softmax(self.weights, dim=0).to(hidden_states.dtype)
        return torch.einsum("s,sbtd->btd", norm_weights, hidden_states)


class AttentiveStatisticsPooling(nn.Module):
    """Attentive statistics pooling (ASP, Okabe et al. 2018, paper ref. [23]) with channel-wise attention.

    * ``global_context=False`` (the MFA heads, Eq. 3): scores = Conv1d(C→H, k=1) → ReLU → BatchNorm1d(H) →
      Conv1d(H→C, k=1).
    * ``global_context=True`` (ECAPA-TDNN): the attention input is ``cat(x, mean, std)`` over channels (3C), the
      mean/std being plain statistics over the valid frames; scores = Conv1d(3C→H) → ReLU → BatchNorm1d(H) →
      tanh → Conv1d(H→C).

    The scores are softmax-normalised over time (masked frames get ``-inf``), then the output is the weighted
    mean and std ``sqrt(clamp(E[x²] − μ², 1e-5))`` concatenated.

    Shapes: ``x`` (B, C, T), ``mask`` (B, T) bool or None → (B, 2C). At least one frame per row must be valid.
    """

    def __init__(self, channels: int, attention_channels: int, global_context: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.global_context = global_context
        in_channels = 3 * channels if global_context else channels
        self.conv1 = nn.Conv1d(in_channels, attention_channels, kernel_size=1)
        self.norm = nn.BatchNorm1d(attention_channels)
        self.conv2 = nn.Conv1d(attention_channels, channels, kernel_size=1)
        self.output_size = 2 * channels

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.channels:
            raise ValueError(f"ASP input has shape {tuple(x.shape)}; expected (B, {self.channels}, T)")
        valid = None
        if mask is not None:
            if tuple(mask.shape) != (x.shape[0], x.shape[2]) or mask.dtype != torch.bool:
                raise ValueError(
                    f"ASP mask has shape {tuple(mask.shape)} and dtype {mask.dtype}; "
                    f"expected bool {(x.shape[0], x.shape[2])}"
                )
            valid = mask[:, None, :]
            x = x.masked_fill(~valid, 0.0)  # padded values (even inf/nan) must not leak into the statistics
        attention_input = x
        if self.global_context:
            if valid is None:
                uniform = torch.full_like(x[:, :1, :], 1.0 / x.shape[-1])
            else:
                counts = valid.sum(dim=-1, keepdim=True).clamp(min=1)
                uniform = valid.to(x.dtype) / counts.to(x.dtype)
            mean, std = _weighted_mean_std(x, uniform)
            time = x.shape[-1]
            attention_input = torch.cat(
                [x, mean.unsqueeze(-1).expand(-1, -1, time), std.unsqueeze(-1).expand(-1, -1, time)], dim=1
            )
        scores = self.norm(F.relu(self.conv1(attention_input)))
        if self.global_context:
            scores = torch.tanh(scores)
        scores = self.conv2(scores)
        if valid is not None:
            scores = scores.masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        mean, std = _weighted_mean_std(x, weights)
        return torch.cat([mean, std], dim=1)


class TDNNBlock(nn.Module):
    """TDNN layer of ECAPA-TDNN: Conv1d (zero "same" padding, dilated) → ReLU → BatchNorm1d.

    Shapes: (B, C_in, T) → (B, C_out, T).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"TDNNBlock kernel_size={kernel_size}; expected an odd size for 'same' padding")
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.relu(self.conv(x)))


class Res2NetBlock(nn.Module):
    """Res2Net multi-scale block: split C channels into ``scale`` chunks; chunk 0 passes through, chunk 1 goes
    through a TDNN (C/scale, kernel, dilation), chunk i ≥ 2 through a TDNN of ``chunk_i + y_{i-1}``.

    Shapes: (B, C, T) → (B, C, T).
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: Tensor) -> Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)
        outputs = [chunks[0]]
        previous: Tensor | None = None
        for chunk, block in zip(chunks[1:], self.blocks):
            previous = block(chunk if previous is None else chunk + previous)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    """Squeeze-excitation as used in ECAPA-TDNN (paper ref. [6]): mean over valid time → Conv1d(C→S, k=1) →
    ReLU → Conv1d(S→C, k=1) → sigmoid → scale the input channels.

    Shapes: ``x`` (B, C, T), ``mask`` (B, T) or None → (B, C, T).
    """

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, se_channels, kernel_size=1)
        self.conv2 = nn.Conv1d(se_channels, channels, kernel_size=1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            squeezed = x.mean(dim=-1, keepdim=True)
        else:
            valid = mask[:, None, :].to(x.dtype)
            squeezed = (x * valid).sum(dim=-1, keepdim=True) / valid.sum(dim=-1, keepdim=True).clamp(min=1.0)
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(squeezed))))
        return x * gate


class SERes2NetBlock(nn.Module):
    """SE-Res2Net block of ECAPA-TDNN: TDNN(k=1) → Res2Net → TDNN(k=1) → SE, plus the residual.

    Shapes: (B, C, T) → (B, C, T).
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int, se_channels: int) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(channels, channels, kernel_size=1)
        self.res2net = Res2NetBlock(channels, kernel_size, dilation, scale)
        self.tdnn2 = TDNNBlock(channels, channels, kernel_size=1)
        self.se = SqueezeExcitation(channels, se_channels)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x + self.se(self.tdnn2(self.res2net(self.tdnn1(x))), mask)


class ECAPATDNN(nn.Module):
    """Small ECAPA-TDNN (Desplanques et al., paper ref. [6]; C = 512 as in the WavLM paper, §3.2).

    TDNN(D→C, k=5) → three SE-Res2Net blocks (k=3, dilations 2, 3, 4) → multi-layer feature aggregation
    (concat of the three block outputs, TDNN(3C→3C, k=1)) → ASP with global context → BatchNorm1d(6C) →
    Conv1d(6C→E, k=1).

    Shapes: ``x`` (B, D, T), ``mask`` (B, T) or None → (B, E).
    """

    def __init__(
        self,
        input_size: int,
        channels: int = 512,
        embed_dim: int = 256,
        attention_channels: int = 128,
        se_channels: int = 128,
        scale: int = 8,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.block0 = TDNNBlock(input_size, channels, kernel_size=5, dilation=1)
        self.blocks = nn.ModuleList(
            SERes2NetBlock(channels, kernel_size=3, dilation=d, scale=scale, se_channels=se_channels)
            for d in (2, 3, 4)
        )
        self.mfa = TDNNBlock(3 * channels, 3 * channels, kernel_size=1)
        self.pooling = AttentiveStatisticsPooling(3 * channels, attention_channels, global_context=True)
        self.pooling_norm = nn.BatchNorm1d(6 * channels)
        self.fc = nn.Conv1d(6 * channels, embed_dim, kernel_size=1)
        self.output_size = embed_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.input_size:
            raise ValueError(f"ECAPATDNN input has shape {tuple(x.shape)}; expected (B, {self.input_size}, T)")
        out = self.block0(x)
        block_outputs = []
        for block in self.blocks:
            out = block(out, mask)
            block_outputs.append(out)
        out = self.mfa(torch.cat(block_outputs, dim=1))
        pooled = self.pooling_norm(self.pooling(out, mask))
        return self.fc(pooled.unsqueeze(-1)).squeeze(-1)


class WeightedAverageECAPAHead(nn.Module):
    """Layer-wise weighted average model (§2.2, Fig. 1a): Eq. 2 → InstanceNorm1d(D, no affine) → ECAPA-TDNN.

    8,807,385 parameters at full size (25 states, D = 1024, C = 512, E = 256).

    Shapes: ``hidden_states`` (L+1, B, T, D), ``mask`` (B, T) or None → (B, E). The mask reaches the SE blocks and
    the pooling; the instance norm and the k > 1 convolutions still see padded frames.
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.layer_weights = LayerWeightedAverage(config.num_states)
        self.norm = nn.InstanceNorm1d(config.hidden_size, affine=False)
        self.ecapa = ECAPATDNN(
            config.hidden_size,
            channels=config.ecapa_channels,
            embed_dim=config.embed_dim,
            attention_channels=config.ecapa_attention_channels,
            se_channels=config.ecapa_se_channels,
            scale=config.ecapa_scale,
        )
        self.output_size = config.embed_dim

    def forward(self, hidden_states: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_inputs(hidden_states, mask, self.config.num_states, self.config.hidden_size)
        averaged = self.layer_weights(hidden_states).transpose(1, 2)  # (B, D, T)
        return self.ecapa(self.norm(averaged), mask)


class MFAHead(nn.Module):
    """Multi-scale feature aggregation model (§2.3, Eq. 3): ``E = Linear(ASP(Concat(h_0, ..., h_L)))``.

    The states are concatenated along channels (state-major: channels ``i·D … (i+1)·D−1`` are ``h_i``), pooled by
    ASP without global context with hidden size D (§3.2), and projected by Linear(2·(L+1)·D → E).
    65,564,928 parameters at full size.

    Shapes: ``hidden_states`` (L+1, B, T, D), ``mask`` (B, T) or None → (B, E).
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.num_states * config.hidden_size
        self.pooling = AttentiveStatisticsPooling(channels, config.hidden_size, global_context=False)
        self.fc = nn.Linear(2 * channels, config.embed_dim)
        self.output_size = config.embed_dim

    def forward(self, hidden_states: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_inputs(hidden_states, mask, self.config.num_states, self.config.hidden_size)
        states, batch, time, dim = hidden_states.shape
        x = hidden_states.permute(1, 0, 3, 2).reshape(batch, states * dim, time)
        return self.fc(self.pooling(x, mask))


class LayerAdapter(nn.Module):
    """Layer Adapter (§2.4, ref. [18]): Linear(D→d') → LayerNorm(d') → ReLU → Linear(d'→d').

    Shapes: (..., D) → (..., d').
    """

    def __init__(self, input_size: int, adapter_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(input_size, adapter_dim)
        self.norm = nn.LayerNorm(adapter_dim)
        self.linear2 = nn.Linear(adapter_dim, adapter_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(F.relu(self.norm(self.linear1(x))))


class AdapterMFAHead(nn.Module):
    """Layer Adapter + MFA model (§2.4, §3.2): one :class:`LayerAdapter` per state, concat ((L+1)·d' = 3200),
    ASP without global context with hidden size d' = 128, Linear(2·(L+1)·d' = 6400 → E).
    6,160,640 parameters at full size.

    The adapters are kept as separate modules (``adapters.3.linear1.weight``) and applied in a plain loop over
    the states. A batched alternative (stacking the 25 adapters' weights each call and using ``torch.baddbmm``)
    was timed, adapter stage only, on the 2-core CPU (float32, eval, median). 1 thread: B=1/T=49 loop 10.2 ms
    vs batched 11.0 ms, B=8/T=300 345 vs 524 ms, B=64/T=150 1.62 vs 2.90 s. 2 threads: B=1/T=49 8.1 vs 6.5 ms,
    B=8/T=300 153 vs 183 ms. Batching only helped at the smallest size with two threads, so the simpler loop
    was kept.

    Shapes: ``hidden_states`` (L+1, B, T, D), ``mask`` (B, T) or None → (B, E).
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.adapters = nn.ModuleList(
            LayerAdapter(config.hidden_size, config.adapter_dim) for _ in range(config.num_states)
        )
        channels = config.num_states * config.adapter_dim
        self.pooling = AttentiveStatisticsPooling(channels, config.adapter_dim, global_context=False)
        self.fc = nn.Linear(2 * channels, config.embed_dim)
        self.output_size = config.embed_dim

    def forward(self, hidden_states: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_inputs(hidden_states, mask, self.config.num_states, self.config.hidden_size)
        _, batch, time, _ = hidden_states.shape
        adapted = torch.stack([adapter(h) for adapter, h in zip(self.adapters, hidden_states)], dim=1)  # (B,S,T,d')
        x = adapted.transpose(2, 3).reshape(batch, -1, time)  # (B, S·d', T), state-major channels
        return self.fc(self.pooling(x, mask))


_HEADS: dict[str, type[nn.Module]] = {
    "wavg_ecapa": WeightedAverageECAPAHead,
    "mfa": MFAHead,
    "adapter_mfa": AdapterMFAHead,
}


def build_head(config: HeadConfig | Mapping[str, Any]) -> nn.Module:
    """Build the head named by ``config.type`` (a :class:`HeadConfig` or a dict for :meth:`HeadConfig.from_dict`)."""
    if not isinstance(config, HeadConfig):
        if not isinstance(config, Mapping):
            raise ValueError(f"build_head got config of type {type(config).__name__}; expected HeadConfig or dict")
        config = HeadConfig.from_dict(config)
    head = _HEADS[config.type](config)
    logger.debug("built %s head with %d parameters", config.type, sum(p.numel() for p in head.parameters()))
    return head
