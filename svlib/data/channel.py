"""Recording channels: what a voice goes through between the talker and the file, simulated.

A speaker-verification system should recognise the talker, not the microphone, codec or room. The demo corpus has
one session per speaker, so a model can score well on its plain trials by recognising the recording chain; passing
the test side of each trial through another channel (:func:`svlib.data.cross_channel.build_cross_channel`) removes that
shortcut, and simulating channels during training (the ``channel`` outcome of
:class:`svlib.data.augment.Augmenter`) shows the model the same voice through several channels. The paper's recipe uses MUSAN and RIRs
only (§3.3), so the ``paper`` profile keeps channel simulation off.

Channels (:data:`CHANNELS`), each a deterministic function of the waveform and its parameters:

- ``narrowband``: analogue telephony: 8 kHz sampling and the 300–3400 Hz telephone band (a Butterworth band-pass),
  back to 16 kHz (:func:`narrowband`);
- ``g711``: digital telephony: narrowband, then ITU-T G.711 at 8 kHz, μ-law or A-law (8-bit segmented logarithmic
  companding, :func:`g711_encode` / :func:`g711_decode`);
- ``g722``: ITU-T G.722 wideband coding at 64 kbit/s (the ``G722`` package's reference implementation,
  :func:`g722_round_trip`);
- ``eq``: a microphone's or loudspeaker's colouring: a spectral tilt, the gain linear in log-frequency, ``t`` dB per
  three octaves around 1 kHz, the power kept (:func:`spectral_tilt`).

:class:`ChannelSimulator` draws one channel and its parameters per utterance from an explicit generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch
from G722 import G722

__all__ = [
    "CHANNELS",
    "TILT_RANGE_DB",
    "ChannelChoice",
    "ChannelSimulator",
    "apply_channel",
    "g711_decode",
    "g711_encode",
    "g722_round_trip",
    "narrowband",
    "spectral_tilt",
]

CHANNELS: tuple[str, ...] = ("narrowband", "g711", "g722", "eq")
"""The simulated channels, drawn uniformly by :class:`ChannelSimulator`."""

TILT_RANGE_DB: tuple[float, float] = (-6.0, 6.0)
"""Range (uniform) of the ``eq`` channel's tilt, dB per three octaves."""

TELEPHONE_BAND_HZ: tuple[float, float] = (300.0, 3400.0)
"""The telephone band kept by :func:`narrowband`."""

G722_DELAY = 22
"""Samples (at 16 kHz) by which a G.722 encode-decode round trip delays the signal: its QMF analysis and synthesis banks
(measured by cross-correlation; :func:`g722_round_trip` removes it)."""

_NARROW_RATE = 8000


def _check_wave(wav: torch.Tensor) -> None:
    if wav.dim() != 1:
        raise ValueError(f"expected one waveform of shape (N,), got shape {tuple(wav.shape)}")


def _to_int16(wav: torch.Tensor) -> np.ndarray:
    return np.clip(np.round(wav.detach().double().cpu().numpy() * 32768.0), -32768, 32767).astype(np.int16)


def _from_int16(pcm: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(pcm.astype(np.float32) / 32768.0).to(like.dtype)


@functools.lru_cache(maxsize=8)
def _resample_filter(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR filter ``resample_poly`` designs by default (Kaiser window, beta 5), designed once per
    ratio instead of at every call (its design cost as much as the filtering of a 2-s crop)."""
    max_rate = max(up, down)
    return scipy.signal.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def _resample(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Polyphase resampling (``scipy.signal.resample_poly``: a Kaiser-windowed FIR anti-aliasing filter), float32."""
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    y = scipy.signal.resample_poly(x.detach().double().cpu().numpy(), up, down, window=_resample_filter(up, down))
    return torch.from_numpy(y).to(torch.float32)


@functools.lru_cache(maxsize=8)
def _band_sos(band_hz: tuple[float, float]) -> np.ndarray:
    return scipy.signal.butter(2, band_hz, btype="bandpass", fs=_NARROW_RATE, output="sos")


def narrowband(wav: torch.Tensor, sample_rate: int = 16000, band_hz: tuple[float, float] = TELEPHONE_BAND_HZ,
               return_narrow: bool = False) -> torch.Tensor:
    """Telephone band: resample to 8 kHz, keep ``band_hz`` (a fourth-order Butterworth band-pass: second order at
    each edge), resample back to ``sample_rate``; ``(N,)`` in, ``(N,)`` out (or the 8 kHz signal with
    ``return_narrow``)."""
    _check_wave(wav)
    narrow = _resample(wav, sample_rate, _NARROW_RATE)
    filtered = scipy.signal.sosfilt(_band_sos(tuple(band_hz)), narrow.double().numpy())
    narrow = torch.from_numpy(filtered).to(torch.float32)
    if return_narrow:
        return narrow.to(wav.dtype)
    return _fit(_resample(narrow, _NARROW_RATE, sample_rate), wav.shape[-1]).to(wav.dtype)


def _fit(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` cut or zero-padded to ``n`` samples (resampling round trips can be off by one)."""
    return x[:n] if x.shape[-1] >= n else torch.nn.functional.pad(x, (0, n - x.shape[-1]))


# ---------------------------------------------------------------------------------------------------------- G.711
_MU_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])  # 14-bit magnitudes + bias 33
_A_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])  # 13-bit magnitudes


def g711_encode(pcm: np.ndarray, law: str = "mu") -> np.ndarray:
    """ITU-T G.711: 16-bit linear PCM ``(N,)`` int16 to 8-bit codes ``(N,)`` uint8.

    μ-law works on 14-bit magnitudes plus a bias of 33, A-law on 13-bit magnitudes; both split the range into 8
    segments of doubling width (the segment is the position of the magnitude's top bit) with 16 uniform steps each,
    and transmit sign, segment and step with the bits inverted (μ-law) or every other bit inverted (A-law,
    ``0x55``), as the recommendation specifies.
    """
    x = np.asarray(pcm, dtype=np.int32)
    if law == "mu":
        x = x >> 2  # 14 bits
        mask = np.where(x < 0, 0x7F, 0xFF)
        mag = np.minimum(np.abs(x), 8159) + 33
        seg = np.searchsorted(_MU_SEGMENT_ENDS, mag)  # first segment whose end >= mag; 8 past the last
        code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F))
        return ((code ^ mask) & 0xFF).astype(np.uint8)
    if law == "a":
        x = x >> 3  # 13 bits
        mask = np.where(x >= 0, 0xD5, 0x55)
        mag = np.where(x >= 0, x, -x - 1)
        seg = np.searchsorted(_A_SEGMENT_ENDS, mag)
        step = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0x0F
        code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | step)
        return ((code ^ mask) & 0xFF).astype(np.uint8)
    raise ValueError(f"law={law!r}; expected 'mu' or 'a'")


def g711_decode(codes: np.ndarray, law: str = "mu") -> np.ndarray:
    """ITU-T G.711: 8-bit codes ``(N,)`` back to 16-bit linear PCM ``(N,)`` int16 (the middle of each step)."""
    c = np.asarray(codes, dtype=np.int32)
    if law == "mu":
        c = ~c & 0xFF
        t = (((c & 0x0F) << 3) + 0x84) << ((c & 0x70) >> 4)
        return np.where(c & 0x80, 0x84 - t, t - 0x84).astype(np.int16)
    if law == "a":
        c = c ^ 0x55
        seg = (c & 0x70) >> 4
        t = (c & 0x0F) << 4
        t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
        return np.where(c & 0x80, t, -t).astype(np.int16)
    raise ValueError(f"law={law!r}; expected 'mu' or 'a'")


def g722_round_trip(wav: torch.Tensor, sample_rate: int = 16000) -> torch.Tensor:
    """Encode ``(N,)`` with ITU-T G.722 at 64 kbit/s and decode it again (at 16 kHz; other rates are resampled),
    aligned: the codec's :data:`G722_DELAY` samples of delay are removed."""
    _check_wave(wav)
    x = wav if sample_rate == 16000 else _resample(wav, sample_rate, 16000)
    pcm = np.concatenate([_to_int16(x), np.zeros(G722_DELAY, dtype=np.int16)])  # flush the codec's delay
    decoded = np.asarray(G722(16000, 64000).decode(G722(16000, 64000).encode(pcm)), dtype=np.int16)
    y = _from_int16(decoded[G722_DELAY: G722_DELAY + x.shape[-1]], wav)
    if sample_rate != 16000:
        y = _resample(y, 16000, sample_rate).to(wav.dtype)
    return _fit(y, wav.shape[-1])


def spectral_tilt(wav: torch.Tensor, tilt_db: float, sample_rate: int = 16000, pivot_hz: float = 1000.0,
                  floor_hz: float = 50.0) -> torch.Tensor:
    """Tilt the spectrum: gain ``tilt_db · log2(f / pivot_hz) / 3`` dB (``tilt_db`` per three octaves, 0 dB at the
    pivot; frequencies below ``floor_hz`` get the gain of ``floor_hz``), applied in the frequency domain, the
    signal's power kept."""
    _check_wave(wav)
    x = wav.double()
    spectrum = torch.fft.rfft(x)
    f = torch.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate, dtype=torch.float64).clamp_min(floor_hz)
    gain = 10.0 ** (tilt_db * torch.log2(f / pivot_hz) / 3.0 / 20.0)
    y = torch.fft.irfft(spectrum * gain, n=x.shape[-1])
    power_in, power_out = x.pow(2).mean(), y.pow(2).mean()
    if power_out > 0:
        y = y * torch.sqrt(power_in / power_out)
    return y.to(wav.dtype)


# ------------------------------------------------------------------------------------------------------- drawing
@dataclass(frozen=True)
class ChannelChoice:
    """One channel: ``kind`` (one of :data:`CHANNELS`), ``law`` for ``g711`` (``mu``/``a``), ``tilt_db`` for ``eq``."""

    kind: str
    law: str | None = None
    tilt_db: float | None = None

    def describe(self) -> str:
        """``"g711 (A-law)"``, ``"eq (+4.2 dB)"``, ``"narrowband"``."""
        if self.kind == "g711":
            return f"g711 ({'μ' if self.law == 'mu' else 'A'}-law)"
        if self.kind == "eq":
            return f"eq ({self.tilt_db:+.1f} dB)"
        return self.kind


def apply_channel(wav: torch.Tensor, choice: ChannelChoice, sample_rate: int = 16000) -> torch.Tensor:
    """Pass ``(N,)`` through the channel ``choice``; returns ``(N,)`` in ``wav``'s dtype."""
    if choice.kind == "narrowband":
        return narrowband(wav, sample_rate)
    if choice.kind == "g711":
        narrow = narrowband(wav, sample_rate, return_narrow=True)
        coded = _from_int16(g711_decode(g711_encode(_to_int16(narrow), choice.law), choice.law), narrow)
        return _fit(_resample(coded, _NARROW_RATE, sample_rate), wav.shape[-1]).to(wav.dtype)
    if choice.kind == "g722":
        return g722_round_trip(wav, sample_rate)
    if choice.kind == "eq":
        return spectral_tilt(wav, choice.tilt_db, sample_rate)
    raise ValueError(f"unknown channel {choice.kind!r}; expected one of {CHANNELS}")


class ChannelSimulator:
    """Draws a channel per utterance (uniform over ``kinds``; μ- or A-law with equal probability; a tilt uniform in
    ``tilt_range_db``) and applies it.

    Args:
        kinds: the channels to draw from (a non-empty subset of :data:`CHANNELS`).
        tilt_range_db: the ``eq`` channel's tilt range.
        sample_rate: the rate of the waveforms.
    """

    def __init__(self, kinds: Sequence[str] = CHANNELS, tilt_range_db: tuple[float, float] = TILT_RANGE_DB,
                 sample_rate: int = 16000) -> None:
        unknown = [k for k in kinds if k not in CHANNELS]
        if unknown or not kinds:
            raise ValueError(f"channel kinds must be a non-empty subset of {CHANNELS}, got {list(kinds)}")
        if tilt_range_db[0] > tilt_range_db[1]:
            raise ValueError(f"tilt_range_db must satisfy low <= high, got {tilt_range_db}")
        self.kinds = tuple(kinds)
        self.tilt_range_db = tuple(float(t) for t in tilt_range_db)
        self.sample_rate = sample_rate

    def choose(self, generator: torch.Generator | None = None) -> ChannelChoice:
        """Draw one channel and its parameters."""
        kind = self.kinds[int(torch.randint(0, len(self.kinds), (1,), generator=generator))]
        if kind == "g711":
            return ChannelChoice(kind, law=("mu", "a")[int(torch.randint(0, 2, (1,), generator=generator))])
        if kind == "eq":
            u = float(torch.rand((), generator=generator, dtype=torch.float64))
            low, high = self.tilt_range_db
            return ChannelChoice(kind, tilt_db=low + (high - low) * u)
        return ChannelChoice(kind)

    def __call__(self, wav: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return apply_channel(wav, self.choose(generator), self.sample_rate)
