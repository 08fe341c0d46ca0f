"""The w2v-BERT 2.0 front end: Kaldi-style log-mel filterbanks, stacked in pairs (Eq. (1)'s ``Fbank(x)``).

Eq. (1) of the paper writes the encoder input as ``Fbank(x)``: this module computes it in pure, batched torch,
matching transformers' ``SeamlessM4TFeatureExtractor`` (``w2v-bert-2.0_preprocessor.json``) to within 1e-3:

1. scale the 16 kHz waveform by 2^15 (Kaldi's 16-bit range);
2. cut 400-sample frames every 160 samples (no centering): ``num_frames = 1 + (num_samples - 400) // 160``;
3. per frame: remove the DC offset, pre-emphasise (0.97), apply the symmetric Povey window;
4. power spectrum of a 512-point FFT, 80 Kaldi-mel triangles (20–8000 Hz, triangular in mel space, no norm);
5. natural log with floor 1.1920929e-7;
6. per utterance and mel bin: ``(x - mean) / sqrt(var(ddof=1) + 1e-7)`` over its valid frames;
7. pad the batch to an even number of frames with the value 1, then stack frame pairs: ``(T, 80) -> (T/2, 160)``.
   A pair is valid (attention mask 1) only when its second frame is: 1 s of audio = 98 fbank frames = 49 model frames.

Named dimensions: ``B`` batch, ``N`` samples, ``F`` fbank frames (100 per second), ``T`` model frames (50 per
second, ``T = ceil(F_max / 2)``), ``M`` mel bins (80).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from importlib import resources
from typing import Sequence

import torch
import torch.nn.functional as nnf

logger = logging.getLogger(__name__)

__all__ = [
    "PREPROCESSOR_CONFIG",
    "SAMPLE_RATE",
    "FeatureExtractor",
    "extract_features",
    "fbank",
    "fbank_frames_for_samples",
    "frames_for_samples",
    "mel_filterbank",
    "normalize_per_utterance",
    "povey_window",
    "stack_frames",
]

PREPROCESSOR_CONFIG: dict = json.loads(
    resources.files("svlib").joinpath("configs/w2v-bert-2.0_preprocessor.json").read_text()
)
"""w2v-BERT 2.0's ``preprocessor_config.json``: the settings of the reference ``SeamlessM4TFeatureExtractor``."""

SAMPLE_RATE = 16000
WAVEFORM_SCALE = 2.0**15
FRAME_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
FFT_LENGTH = 512
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07
NORM_EPS = 1e-7
STRIDE = 2
PADDING_VALUE = 1.0
MIN_SAMPLES = FRAME_LENGTH + HOP_LENGTH  # two fbank frames: the per-utterance variance (ddof=1) needs two
# Framing, FFT, mel and log run in float64 (inputs and outputs stay float32): a float32 FFT's round-off floor
# (~1e-7 of a frame's peak) swamps the weak mel bins of tonal input, e.g. 1.8e-2 max error on a chirp in float32
# against 1.4e-6 in float64.
COMPUTE_DTYPE = torch.float64


def _hz_to_kaldi_mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


@functools.lru_cache(maxsize=None)
def _mel_filterbank_cpu64(num_mel_bins: int, fft_length: int, sample_rate: int, low_freq: float, high_freq: float):
    # Triangles are built in mel space: bin centres and filter edges are both on the Kaldi mel scale.
    num_bins = fft_length // 2 + 1
    bin_width = sample_rate / fft_length
    bin_mel = _hz_to_kaldi_mel(bin_width * torch.arange(num_bins, dtype=torch.float64))  # (K,)
    edges = torch.linspace(
        float(_hz_to_kaldi_mel(torch.tensor(low_freq, dtype=torch.float64))),
        float(_hz_to_kaldi_mel(torch.tensor(high_freq, dtype=torch.float64))),
        num_mel_bins + 2,
        dtype=torch.float64,
    )  # (M + 2,)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    up = (bin_mel[:, None] - left) / (centre - left)  # (K, M)
    down = (right - bin_mel[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


@functools.lru_cache(maxsize=None)
def _cached_on(kind: str, device: str, dtype: torch.dtype, args: tuple) -> torch.Tensor:
    base = _mel_filterbank_cpu64(*args) if kind == "mel" else _povey_window_cpu64(*args)
    return base.to(device=torch.device(device), dtype=dtype)


def mel_filterbank(
    num_mel_bins: int = NUM_MEL_BINS,
    fft_length: int = FFT_LENGTH,
    sample_rate: int = SAMPLE_RATE,
    low_freq: float = LOW_FREQ,
    high_freq: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Kaldi-mel triangular filters ``(K, M)`` with ``K = fft_length // 2 + 1`` FFT bins and ``M`` mel bins.

    Filter edges are equally spaced on the Kaldi mel scale ``1127 ln(1 + f / 700)`` between ``low_freq`` and
    ``high_freq`` (default Nyquist) and the triangles are linear in mel (not in Hz); no area normalisation.
    Built once in float64 and cached per (arguments, device, dtype). Do not modify the returned tensor in place.
    """
    high = float(sample_rate // 2 if high_freq is None else high_freq)
    args = (int(num_mel_bins), int(fft_length), int(sample_rate), float(low_freq), high)
    return _cached_on("mel", str(torch.device(device or "cpu")), dtype, args)


@functools.lru_cache(maxsize=None)
def _povey_window_cpu64(length: int) -> torch.Tensor:
    return torch.hann_window(length, periodic=False, dtype=torch.float64).pow(0.85)


def povey_window(
    length: int = FRAME_LENGTH, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Kaldi's Povey window ``(length,)``: a symmetric (non-periodic) Hann window raised to 0.85. Cached."""
    return _cached_on("window", str(torch.device(device or "cpu")), dtype, (int(length),))


def fbank_frames_for_samples(n: int | torch.Tensor) -> int | torch.Tensor:
    """Number of 25 ms / 10 ms fbank frames ``F`` for ``n`` samples (0 when ``n < 400``)."""
    if isinstance(n, torch.Tensor):
        return torch.where(n >= FRAME_LENGTH, 1 + torch.div(n - FRAME_LENGTH, HOP_LENGTH, rounding_mode="floor"), 0)
    return 1 + (int(n) - FRAME_LENGTH) // HOP_LENGTH if n >= FRAME_LENGTH else 0


def frames_for_samples(n: int | torch.Tensor, stride: int = STRIDE) -> int | torch.Tensor:
    """Number of valid model frames (ones in the attention mask) for ``n`` samples: ``F // stride``.

    1 s (16,000 samples) gives 98 fbank frames and 49 model frames.
    """
    f = fbank_frames_for_samples(n)
    return torch.div(f, stride, rounding_mode="floor") if isinstance(f, torch.Tensor) else f // stride


def fbank(
    wavs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    window: torch.Tensor | None = None,
    mel_filters: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaldi-compatible log-mel filterbanks of a padded batch (steps 1–5 of Eq. (1)'s ``Fbank``).

    Args:
        wavs: ``(B, N)`` float waveforms at 16 kHz in [-1, 1], right-padded.
        lengths: ``(B,)`` long, valid samples per row (default: all ``N``). Each must be ``>= 560`` (two frames).
        window, mel_filters: optional precomputed ``(400,)`` window and ``(257, 80)`` filters (e.g. module buffers).

    Returns:
        feats: ``(B, F, M)`` float32 log-mel energies, ``F = max(num_frames)``; frames at or beyond an
            utterance's ``num_frames`` may contain padding samples.
        num_frames: ``(B,)`` long, ``1 + (length - 400) // 160``.
    """
    if wavs.dim() != 2:
        raise ValueError(f"fbank expects wavs of shape (B, N), got {tuple(wavs.shape)}")
    B, N = wavs.shape
    device = wavs.device
    if lengths is None:
        lengths = torch.full((B,), N, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, dtype=torch.long, device=device)
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
    too_short = (lengths < MIN_SAMPLES) | (lengths > N)
    if bool(too_short.any()):
        raise ValueError(
            f"every length must lie in [{MIN_SAMPLES}, {N}] samples (two 25 ms frames at 16 kHz up to the padded "
            f"length), got {lengths.tolist()}"
        )
    num_frames = fbank_frames_for_samples(lengths)
    max_frames = int(num_frames.max())
    cdt = COMPUTE_DTYPE
    if window is None:
        window = povey_window(FRAME_LENGTH, device=device, dtype=cdt)
    if mel_filters is None:
        mel_filters = mel_filterbank(device=device, dtype=cdt)

    # 1. scale to the 16-bit range (in float32, as the reference does) and keep only the samples framing needs
    used = FRAME_LENGTH + (max_frames - 1) * HOP_LENGTH
    x = (wavs[:, :used].to(torch.float32) * WAVEFORM_SCALE).to(cdt)
    # 2. frames (B, F, 400), no centering: strided views, nothing copied
    frames = x.unfold(-1, FRAME_LENGTH, HOP_LENGTH)
    mean = frames.mean(dim=-1, keepdim=True)  # (B, F, 1)
    # 3. DC removal, pre-emphasis and the Povey window, written straight into the zero-padded FFT input. Both steps
    # are linear, so a frame's (x_i - m) - 0.97 (x_{i-1} - m) is the waveform's d_i = x_i - 0.97 x_{i-1} minus
    # 0.03 m: the pre-emphasis runs once over the waveform (not over every overlapping frame) and is framed like it.
    # Kaldi's first sample of a frame has no predecessor: (x_0 - m) (1 - 0.97). The output equals the frame-by-frame
    # form's after the cast to float32 (float64 round-off only).
    d = torch.empty_like(x)
    torch.sub(x[:, 1:], x[:, :-1], alpha=PREEMPHASIS, out=d[:, 1:])
    d[:, 0] = 0.0  # overwritten below: a frame's first sample is set apart
    padded = x.new_zeros(B, max_frames, FFT_LENGTH)
    body = padded[..., :FRAME_LENGTH]
    torch.sub(d.unfold(-1, FRAME_LENGTH, HOP_LENGTH), mean, alpha=1.0 - PREEMPHASIS, out=body)
    body[..., 0] = (frames[..., 0] - mean[..., 0]) * (1.0 - PREEMPHASIS)
    body.mul_(window.to(cdt))
    # 4. power spectrum |X|^2 = Re^2 + Im^2 (B, F, 257) (no square root: abs() then pow(2) costs twice as much) and
    # mel energies (B, F, 80)
    spectrum = torch.view_as_real(torch.fft.rfft(padded))
    power = spectrum[..., 0] * spectrum[..., 0]
    power.addcmul_(spectrum[..., 1], spectrum[..., 1])
    mel = power @ mel_filters.to(cdt)
    # 5. natural log with floor
    feats = mel.clamp_(min=MEL_FLOOR).log_()
    return feats.to(torch.float32), num_frames


def normalize_per_utterance(
    feats: torch.Tensor, num_frames: torch.Tensor, padding_value: float = PADDING_VALUE, eps: float = NORM_EPS
) -> torch.Tensor:
    """Zero mean, unit variance per utterance and mel bin over its valid frames (step 6).

    ``(x - mean) / sqrt(var + eps)`` with the unbiased variance (``ddof=1``, as the reference), accumulated in
    float64. Frames at or beyond ``num_frames`` are set to ``padding_value``.

    Args:
        feats: ``(B, F, M)``. num_frames: ``(B,)`` long, each ``>= 2``.
    Returns:
        ``(B, F, M)`` normalised features, same dtype.
    """
    B, F, _ = feats.shape
    x = feats.to(COMPUTE_DTYPE)  # statistics in float64: batch rows then equal single utterances to ~1e-7
    valid = (torch.arange(F, device=feats.device)[None, :] < num_frames[:, None])[..., None]  # (B, F, 1)
    n = num_frames.to(x.dtype)[:, None, None]
    mean = torch.where(valid, x, 0.0).sum(dim=1, keepdim=True) / n
    centred = torch.where(valid, x - mean, 0.0)
    var = centred.pow(2).sum(dim=1, keepdim=True) / (n - 1.0)
    out = centred / torch.sqrt(var + eps)
    return torch.where(valid, out, padding_value).to(feats.dtype)


def stack_frames(
    feats: torch.Tensor,
    num_frames: torch.Tensor,
    stride: int = STRIDE,
    padding_value: float = PADDING_VALUE,
    pad_to_multiple_of: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to a multiple of ``pad_to_multiple_of`` frames, then stack ``stride`` consecutive frames (step 7).

    Args:
        feats: ``(B, F, M)`` normalised features whose invalid frames already hold ``padding_value``.
        num_frames: ``(B,)`` long, valid fbank frames per utterance.
    Returns:
        input_features: ``(B, T, M * stride)`` with ``T = F_pad // stride`` where ``F_pad`` is ``F`` rounded up to
            ``pad_to_multiple_of`` (so ``T = ceil(F / 2)`` by default; with an odd ``F`` the last row holds the last
            real frame next to ``padding_value``).
        attention_mask: ``(B, T)`` long; a stacked frame is valid when its last fbank frame is, so each
            utterance has ``num_frames // stride`` ones (an odd last frame is dropped from the mask).
    """
    B, F, M = feats.shape
    # 1. pad to a multiple of pad_to_multiple_of, then drop a remainder modulo stride
    f_pad = math.ceil(F / pad_to_multiple_of) * pad_to_multiple_of
    if f_pad > F:
        feats = nnf.pad(feats, (0, 0, 0, f_pad - F), value=padding_value)
    f_use = f_pad - f_pad % stride
    feats = feats[:, :f_use]
    # 2. stack: (B, F, M) -> (B, F / stride, M * stride)
    stacked = feats.reshape(B, f_use // stride, M * stride)
    # 3. mask from the last frame of each group
    frame_valid = torch.arange(f_use, device=feats.device)[None, :] < num_frames[:, None]
    attention_mask = frame_valid[:, stride - 1 :: stride].long()
    return stacked, attention_mask


def _as_batch(
    wavs: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of 1-D waveforms, a 1-D waveform or a padded ``(B, N)`` batch -> ``(B, N)`` float32 and ``(B,)`` long."""
    if isinstance(wavs, torch.Tensor):
        if wavs.dim() == 1:
            wavs = wavs[None]
        if wavs.dim() != 2:
            raise ValueError(f"expected a (N,) or (B, N) waveform tensor, got shape {tuple(wavs.shape)}")
        if lengths is None:
            lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long, device=wavs.device)
        return wavs.to(torch.float32), torch.as_tensor(lengths, dtype=torch.long, device=wavs.device)
    if lengths is not None:
        raise ValueError("lengths is only accepted with a padded (B, N) tensor, not with a list of waveforms")
    items = [torch.as_tensor(w, dtype=torch.float32) for w in wavs]
    if not items or any(w.dim() != 1 for w in items):
        raise ValueError("expected a non-empty list of 1-D waveforms")
    device = items[0].device
    lengths = torch.tensor([w.shape[0] for w in items], dtype=torch.long, device=device)
    padded = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
    return padded, lengths


def extract_features(
    wavs: torch.Tensor | Sequence[torch.Tensor],
    lengths: torch.Tensor | None = None,
    *,
    window: torch.Tensor | None = None,
    mel_filters: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1)'s ``Fbank(x)``: waveforms -> w2v-BERT 2.0 ``input_features`` and ``attention_mask``.

    Same output (within 1e-3) as ``SeamlessM4TFeatureExtractor(...)(wavs, sampling_rate=16000, padding=True,
    return_tensors="pt")`` for the same batch, computed in torch on the waveforms' device.

    Args:
        wavs: a list of ``B`` 1-D 16 kHz waveforms, one ``(N,)`` waveform, or a right-padded ``(B, N)`` tensor.
        lengths: ``(B,)`` valid samples per row of a padded tensor (default: all ``N``).
    Returns:
        input_features: ``(B, T, 160)`` float32, ``T = ceil(F_max / 2)``, padded rows/halves hold 1.0.
        attention_mask: ``(B, T)`` long, ``frames_for_samples(length)`` leading ones per utterance.
    """
    batch, lengths = _as_batch(wavs, lengths)
    feats, num_frames = fbank(batch, lengths, window=window, mel_filters=mel_filters)
    feats = normalize_per_utterance(feats, num_frames)
    return stack_frames(feats, num_frames)


class FeatureExtractor(torch.nn.Module):
    """``torch.nn.Module`` form of :func:`extract_features` (Eq. (1)'s ``Fbank``); no parameters.

    The Povey window ``(400,)`` and mel filters ``(257, 80)`` are non-persistent float64 buffers, so
    ``.to(device)`` moves them and state dicts stay empty. ``forward(wavs, lengths=None)`` returns
    ``(input_features (B, T, 160), attention_mask (B, T))``.
    """

    window: torch.Tensor
    mel_filters: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", povey_window(dtype=torch.float64).clone(), persistent=False)
        self.register_buffer("mel_filters", mel_filterbank(dtype=torch.float64).clone(), persistent=False)

    sample_rate = SAMPLE_RATE
    frames_for_samples = staticmethod(frames_for_samples)

    def forward(
        self, wavs: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.window.dtype != COMPUTE_DTYPE:  # e.g. after .half(): rebuild the buffers at full precision
            return extract_features(wavs, lengths)
        return extract_features(wavs, lengths, window=self.window, mel_filters=self.mel_filters)
