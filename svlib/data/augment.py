"""On-the-fly data augmentation of the recipe: additive noise (MUSAN-style) and reverberation (simulated RIRs).

RECIPE.md ("Training recipe", stages 1–2): each training crop gets, with probability 1/3 each,

- nothing;
- additive noise, the category uniform over {noise}, {music}, {babble + music}, {babble of 3–8 speakers}, at an SNR
  drawn from U(5, 20) dB, or U(15, 25) dB when babble is present (:func:`add_noise`);
- reverberation with a room impulse response of a simulated small or medium room (:func:`reverberate`).

Beyond the recipe, an :class:`Augmenter` can draw a fourth outcome, a simulated recording channel (telephone band,
G.711, G.722, spectral tilt: :mod:`svlib.data.channel`) with probability ``p_channel``; the ``demo`` profile uses it,
the ``paper`` profile does not (the paper uses MUSAN and RIRs only).

Pieces:

- :class:`AudioPool` / :class:`NoiseBank` — noise, music and speech (babble) sources, from a MUSAN directory
  (``musan/{noise,music,speech}/**/*.wav``, read lazily) or from in-memory tensors;
- :func:`load_rirs` (Kaldi's ``RIRS_NOISES/simulated_rirs/{smallroom,mediumroom}``) and :func:`simulate_rirs`
  (pyroomacoustics shoebox rooms, cached on disk);
- :class:`Augmenter` — draws an :class:`AugmentChoice` per utterance and applies it.

The demo profile's offline stand-in for MUSAN is :mod:`svlib.data.demo_noise`.

All randomness comes from an explicit ``torch.Generator`` (or numpy ``SeedSequence`` for room simulation), so a seed
reproduces every draw.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import scipy.fft
import soundfile as sf
import torch

from svlib.frontend.audio import crop_or_loop, load_audio
from svlib.core.atomic import atomic_write
from svlib.data.channel import ChannelChoice, ChannelSimulator, apply_channel

logger = logging.getLogger(__name__)

__all__ = [
    "BABBLE_SNR_RANGE_DB",
    "BABBLE_SPEAKERS",
    "CATEGORIES",
    "COLOURS",
    "NOISE_SNR_RANGE_DB",
    "RIR_ROOM_SIZES",
    "AudioPool",
    "AugmentChoice",
    "Augmenter",
    "NoiseBank",
    "add_noise",
    "coloured_noise",
    "estimate_rt60",
    "load_rirs",
    "reverberate",
    "simulate_rirs",
]

CATEGORIES: tuple[str, ...] = ("noise", "music", "babble_music", "babble")
"""Additive-noise categories, drawn uniformly: {noise}, {music}, {babble + music}, {babble of 3–8 speakers}."""

NOISE_SNR_RANGE_DB: tuple[float, float] = (5.0, 20.0)
"""SNR range (dB, uniform) without babble."""

BABBLE_SNR_RANGE_DB: tuple[float, float] = (15.0, 25.0)
"""SNR range (dB, uniform) when babble is present."""

BABBLE_SPEAKERS: tuple[int, int] = (3, 8)
"""Inclusive range of the number of babble talkers."""

_CATEGORY_SOURCES: dict[str, tuple[str, ...]] = {
    "noise": ("noise",),
    "music": ("music",),
    "babble_music": ("speech", "music"),
    "babble": ("speech",),
}
"""The :class:`NoiseBank` kinds each noise category mixes."""

COLOURS: dict[str, float] = {"white": 0.0, "pink": 1.0, "brown": 2.0}
"""Spectral exponent ``a`` of each noise colour: power spectral density ∝ 1 / f^a."""

RIR_ROOM_SIZES: dict[str, tuple[float, float]] = {"small": (1.0, 10.0), "medium": (10.0, 30.0)}
"""Length and width range (m, uniform) of simulated rooms, as in Kaldi's RIR simulation; height U(2, 5) m."""

Entry = Union[torch.Tensor, str, os.PathLike]


# ------------------------------------------------------------------------------------------------ pure functions
def _power(x: torch.Tensor) -> torch.Tensor:
    """Mean power over the last axis: ``(..., N) -> (...,)`` (one fused norm, accurate to ~1e-6 in float32)."""
    return torch.linalg.vector_norm(x, dim=-1).pow(2) / x.shape[-1]


def add_noise(wav: torch.Tensor, noise: torch.Tensor, snr_db: float | torch.Tensor) -> torch.Tensor:
    """``wav + g·noise`` with the gain ``g`` that makes the signal-to-noise ratio exactly ``snr_db``.

    ``SNR = 10·log10(P(wav) / P(g·noise))`` with ``P`` the mean power over samples, so
    ``g = sqrt(P(wav) / (P(noise)·10^(snr_db/10)))``. Shapes: ``wav`` and ``noise`` ``(..., N)`` (broadcastable),
    ``snr_db`` a float or a tensor broadcastable to ``(...)``. A silent ``noise`` (zero power) adds nothing.
    Returns ``(..., N)`` in ``wav``'s dtype.
    """
    if wav.shape[-1] != noise.shape[-1]:
        raise ValueError(f"wav and noise must have the same length, got {wav.shape[-1]} and {noise.shape[-1]} samples")
    snr = torch.as_tensor(snr_db, dtype=torch.float64)
    p_sig, p_noise = _power(wav).to(torch.float64), _power(noise).to(torch.float64)
    gain = torch.where(p_noise > 0, torch.sqrt(p_sig / (p_noise.clamp_min(1e-300) * 10.0 ** (snr / 10))), 0.0)
    return wav + gain.to(wav.dtype).unsqueeze(-1) * noise.to(wav.dtype)


def _fft_convolve(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Full linear convolution along the last axis via real FFTs: ``(..., N) * (..., K) -> (..., N + K - 1)``."""
    n = x.shape[-1] + h.shape[-1] - 1
    n_fft = scipy.fft.next_fast_len(n, real=True)  # 2^a·3^b·5^c·...: often well below the next power of two
    y = torch.fft.irfft(torch.fft.rfft(x, n_fft) * torch.fft.rfft(h, n_fft), n_fft)
    return y[..., :n]


def reverberate(wav: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """Convolve ``wav`` (``(N,)`` or ``(B, N)``) with a room impulse response ``rir`` (``(K,)``): same length and power.

    Convention (Kaldi ``wav-reverberate --shift-output``):

    1. the RIR is divided by its peak, taken as the direct path: ``rir[d] = 1`` at ``d = argmax |rir|`` (sign kept);
    2. full linear convolution (real FFTs);
    3. the output is read from the direct-path delay, ``y[n] = (wav * rir)[n + d]`` for ``n < N``: speech stays
       aligned with the dry input and the length stays ``N`` (the reverberant tail past ``N`` is cut);
    4. each row of ``y`` is rescaled to the mean power of the corresponding input row.
    """
    if rir.dim() != 1 or rir.numel() == 0:
        raise ValueError(f"rir must be a non-empty 1-D impulse response (K,), got shape {tuple(rir.shape)}")
    delay = int(rir.abs().argmax())
    peak = rir[delay]  # signed: the direct path becomes +1, so the polarity is kept
    if not torch.isfinite(rir).all() or peak == 0:
        raise ValueError(f"rir must have finite, non-zero samples (peak |rir| = {float(peak.abs())})")
    n = wav.shape[-1]
    y = _fft_convolve(wav, (rir / peak).to(wav.dtype))[..., delay : delay + n]  # -> (..., N)
    p_in, p_out = _power(wav), _power(y)
    scale = torch.where(p_out > 0, torch.sqrt(p_in / p_out.clamp_min(torch.finfo(y.dtype).tiny)), 0.0)
    return y * scale.unsqueeze(-1)


def coloured_noise(
    num_samples: int, exponent: float | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian noise ``(num_samples,)`` with power spectral density ∝ 1 / f^a, unit RMS.

    ``exponent`` is ``a`` or a name of :data:`COLOURS` (white 0, pink 1, brown 2). White Gaussian noise is shaped
    in the frequency domain by ``f^(-a/2)`` (amplitude), with the DC bin set to zero, then scaled to unit RMS.
    """
    a = COLOURS.get(exponent) if isinstance(exponent, str) else float(exponent)
    if a is None:
        raise ValueError(f"unknown noise colour {exponent!r}; expected one of {sorted(COLOURS)} or a number")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    white = torch.randn(num_samples, generator=generator, dtype=torch.float64)
    spectrum = torch.fft.rfft(white)  # -> (N//2 + 1,)
    f = torch.fft.rfftfreq(num_samples, dtype=torch.float64)
    shape = torch.zeros_like(f)
    shape[1:] = f[1:].pow(-a / 2)
    x = torch.fft.irfft(spectrum * shape, num_samples)
    return (x / x.pow(2).mean().sqrt()).to(torch.float32)


def estimate_rt60(rir: torch.Tensor | np.ndarray, sample_rate: int = 16000, decay_db: float = 20.0) -> float:
    """Reverberation time (s) of an impulse response by Schroeder backward integration (T20 × 3 by default).

    ``E(t) = ∫_t^∞ h²``; the time the energy decay curve takes from -5 dB to -(5 + ``decay_db``) dB, scaled to 60 dB.
    Returns ``nan`` when the curve never reaches that level.
    """
    h = np.asarray(rir, dtype=np.float64)
    edc = np.cumsum(h[::-1] ** 2)[::-1]
    if edc[0] <= 0:
        return float("nan")
    edc_db = 10 * np.log10(np.maximum(edc / edc[0], 1e-300))
    below_start = np.flatnonzero(edc_db <= -5.0)
    below_end = np.flatnonzero(edc_db <= -5.0 - decay_db)
    if below_start.size == 0 or below_end.size == 0:
        return float("nan")
    return float((below_end[0] - below_start[0]) / sample_rate * 60.0 / decay_db)


# --------------------------------------------------------------------------------------------------- sources
class AudioPool:
    """Waveforms held in memory (tensors) or on disk (paths, decoded on demand), indexable and croppable.

    Paths are read lazily: :meth:`segment` reads only the needed frames when the file's rate equals
    ``sample_rate`` (so hour-long MUSAN files cost one small read); otherwise the whole file is decoded with
    :func:`svlib.frontend.audio.load_audio`, resampled and kept in an LRU cache of ``cache_size`` files.
    """

    def __init__(self, entries: Sequence[Entry], sample_rate: int = 16000, cache_size: int = 32) -> None:
        self.entries: list[Entry] = [e if isinstance(e, torch.Tensor) else Path(e) for e in entries]
        for i, e in enumerate(self.entries):
            if isinstance(e, torch.Tensor) and (e.dim() != 1 or e.numel() == 0):
                raise ValueError(f"in-memory source {i} must be a non-empty 1-D waveform (N,), got {tuple(e.shape)}")
        self.sample_rate = sample_rate
        self.cache_size = cache_size
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._info: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int) -> torch.Tensor:
        """Source ``i`` as a whole ``(N,)`` float32 waveform at ``sample_rate``."""
        entry = self.entries[i]
        if isinstance(entry, torch.Tensor):
            return entry
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        wav = load_audio(entry, self.sample_rate, min_duration=0.0)
        if self.cache_size > 0:
            self._cache[i] = wav
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return wav

    def _frames_and_rate(self, i: int) -> tuple[int, int]:
        if i not in self._info:
            path = self.entries[i]
            try:
                info = sf.info(str(path))
            except (sf.SoundFileError, RuntimeError) as err:
                raise ValueError(f"{path}: cannot read audio header ({err}); expected a WAV/FLAC file") from err
            if info.frames == 0:
                raise ValueError(f"{path}: no samples; expected a non-empty noise/music/speech recording")
            self._info[i] = (int(info.frames), int(info.samplerate))
        return self._info[i]

    def segment(self, i: int, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random ``(num_samples,)`` stretch of source ``i`` (looped if shorter), see :func:`crop_or_loop`."""
        entry = self.entries[i]
        if isinstance(entry, torch.Tensor) or i in self._cache:
            return crop_or_loop(self.load(i), num_samples, generator)
        frames, rate = self._frames_and_rate(i)
        if rate != self.sample_rate:
            return crop_or_loop(self.load(i), num_samples, generator)
        start = int(torch.randint(0, max(frames - num_samples, 0) + 1, (1,), generator=generator))
        data, _ = sf.read(str(entry), start=start, frames=min(num_samples, frames), dtype="float32", always_2d=True)
        wav = torch.from_numpy(data).mean(dim=1)  # (frames, channels) -> (frames,)
        return crop_or_loop(wav, num_samples, generator)


class NoiseBank:
    """Additive-noise sources by MUSAN category: ``noise``, ``music`` and ``speech`` (the babble talkers).

    Each category is an :class:`AudioPool` of tensors and/or file paths. Build it from a MUSAN directory with
    :meth:`from_musan`, from tensors directly, or with :func:`svlib.data.demo_noise.demo_noise_bank`.
    """

    KINDS = ("noise", "music", "speech")

    def __init__(
        self,
        noise: Sequence[Entry] = (),
        music: Sequence[Entry] = (),
        speech: Sequence[Entry] = (),
        sample_rate: int = 16000,
        cache_size: int = 32,
    ) -> None:
        self.sample_rate = sample_rate
        self.pools: dict[str, AudioPool] = {
            "noise": AudioPool(noise, sample_rate, cache_size),
            "music": AudioPool(music, sample_rate, cache_size),
            "speech": AudioPool(speech, sample_rate, cache_size),
        }

    @classmethod
    def from_musan(cls, root: str | os.PathLike, sample_rate: int = 16000, cache_size: int = 32) -> NoiseBank:
        """All ``{noise,music,speech}/**/*.wav`` under ``root`` (the ``musan`` folder, or a folder holding it)."""
        root = Path(root)
        if (root / "musan").is_dir():
            root = root / "musan"
        if not root.is_dir():
            raise FileNotFoundError(f"MUSAN directory {root} not found; expected musan/{{noise,music,speech}}/**/*.wav")
        files = {k: sorted((root / k).rglob("*.wav")) for k in cls.KINDS}
        if not any(files.values()):
            raise FileNotFoundError(
                f"no .wav files under {root}/{{noise,music,speech}}; expected the MUSAN layout "
                "musan/{noise,music,speech}/**/*.wav"
            )
        logger.info("MUSAN at %s: %s", root, {k: len(v) for k, v in files.items()})
        return cls(files["noise"], files["music"], files["speech"], sample_rate, cache_size)

    def counts(self) -> dict[str, int]:
        """Number of sources per kind."""
        return {k: len(p) for k, p in self.pools.items()}

    def segment(self, kind: str, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random ``(num_samples,)`` stretch of a uniformly chosen source of ``kind`` (noise, music or speech)."""
        if kind not in self.pools:
            raise ValueError(f"unknown noise kind {kind!r}; expected one of {self.KINDS}")
        pool = self.pools[kind]
        if len(pool) == 0:
            raise ValueError(f"the noise bank has no {kind!r} sources")
        i = int(torch.randint(0, len(pool), (1,), generator=generator))
        return pool.segment(i, num_samples, generator)


# ------------------------------------------------------------------------------------------------------ RIRs
def load_rirs(
    root: str | os.PathLike,
    rooms: Sequence[str] = ("smallroom", "mediumroom"),
    max_rirs: int | None = None,
    seed: int = 0,
) -> list[Path]:
    """Paths of Kaldi's simulated RIRs: ``RIRS_NOISES/simulated_rirs/{smallroom,mediumroom}/**/*.wav``.

    ``root`` is ``RIRS_NOISES`` or its ``simulated_rirs`` folder. With ``max_rirs`` a seeded random subset is kept
    (sorted). The files are decoded when first used (:class:`Augmenter` accepts paths and tensors).
    """
    root = Path(root)
    base = root / "simulated_rirs" if (root / "simulated_rirs").is_dir() else root
    missing = [r for r in rooms if not (base / r).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"RIR folders {missing} not found under {base}; expected RIRS_NOISES/simulated_rirs/"
            "{smallroom,mediumroom}/**/*.wav (Kaldi's RIRS_NOISES.zip, OpenSLR 28)"
        )
    paths = sorted(p for r in rooms for p in (base / r).rglob("*.wav"))
    if not paths:
        raise FileNotFoundError(f"no .wav RIRs under {base}/{{{','.join(rooms)}}}")
    if max_rirs is not None and max_rirs < len(paths):
        keep = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))[:max_rirs]
        paths = [paths[i] for i in sorted(keep.tolist())]
    logger.info("using %d RIRs from %s", len(paths), base)
    return paths


def _simulate_one(
    rng: np.random.Generator, kind: str, sample_rate: int, rt60_range: tuple[float, float], max_order: int
) -> tuple[np.ndarray, dict]:
    """One shoebox RIR whose Schroeder RT60 is calibrated to a target drawn from ``rt60_range``.

    1. room: length, width ~ U(:data:`RIR_ROOM_SIZES`[kind]) m, height ~ U(2, 5) m; source and microphone uniform
       in the room, at least ``min(0.5 m, side/4)`` from the walls; target RT60 ~ U(rt60_range);
    2. initial energy absorption from Eyring's formula, ``a = 1 - exp(-0.161·V / (S·RT60))``;
    3. image-source simulation (``max_order`` reflections), then up to 5 secant steps on ``log a`` until the
       measured RT60 (:func:`estimate_rt60`) is within 10 % of the target (shoebox rooms are not Sabine-diffuse).
    """
    import pyroomacoustics as pra  # imported lazily: only room simulation needs it

    lo, hi = RIR_ROOM_SIZES[kind]
    dims = np.array([rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(2.0, 5.0)])
    margin = np.minimum(0.5, dims / 4)
    src, mic = rng.uniform(margin, dims - margin), rng.uniform(margin, dims - margin)
    target = float(rng.uniform(*rt60_range))
    volume, surface = float(np.prod(dims)), 2 * float(dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])

    def simulate(absorption: float) -> tuple[np.ndarray, float]:
        room = pra.ShoeBox(
            dims, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order, air_absorption=False
        )
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float64)
        return h, estimate_rt60(h, sample_rate)

    log_a = math.log(float(np.clip(1 - math.exp(-0.161 * volume / (surface * target)), 0.01, 0.99)))
    h, rt60 = simulate(math.exp(log_a))
    best = (abs(math.log(rt60 / target)), h, rt60, math.exp(log_a))
    prev = None
    for _ in range(5):
        if abs(rt60 - target) <= 0.1 * target:
            break
        err = math.log(rt60 / target)
        # RT60 ∝ 1/a (Sabine) gives slope -1 in log-log; use the secant slope once two points exist
        slope = -1.0 if prev is None or prev[0] == log_a else (err - prev[1]) / (log_a - prev[0])
        if slope >= -0.05:  # flat or wrong-signed secant: fall back to the Sabine slope
            slope = -1.0
        prev = (log_a, err)
        log_a = float(np.clip(log_a - err / slope, math.log(0.01), math.log(0.99)))
        h, rt60 = simulate(math.exp(log_a))
        if abs(math.log(rt60 / target)) < best[0]:
            best = (abs(math.log(rt60 / target)), h, rt60, math.exp(log_a))
    _, h, rt60, absorption = best
    info = {"dims": dims, "source": src, "mic": mic, "rt60_target": target, "rt60": rt60, "absorption": absorption}
    return h.astype(np.float32), info


def simulate_rirs(
    n: int,
    kind: str = "small",
    seed: int = 0,
    sample_rate: int = 16000,
    cache_dir: str | os.PathLike | None = None,
    rt60_range: tuple[float, float] = (0.2, 0.8),
    max_order: int = 30,
) -> list[torch.Tensor]:
    """``n`` room impulse responses ``(K_i,)`` of simulated ``small`` (1–10 m) or ``medium`` (10–30 m) rooms.

    Shoebox rooms (pyroomacoustics image-source method) as in Kaldi's RIR simulation: length and width
    U(1, 10) m (small) or U(10, 30) m (medium), height U(2, 5) m, random source and microphone positions, and a
    random RT60 ~ U(0.2, 0.8) s reached by calibrating the wall absorption (see :func:`_simulate_one`). RIR ``i``
    depends only on ``(seed, kind, i)``. With ``cache_dir`` the RIRs (and each room's dimensions, positions,
    absorption and RT60) are stored once in ``cache_dir/rirs-<kind>-n<n>-seed<seed>-sr<sr>-....npz`` and later
    calls load that file.
    """
    if kind not in RIR_ROOM_SIZES:
        raise ValueError(f"unknown room kind {kind!r}; expected one of {sorted(RIR_ROOM_SIZES)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < rt60_range[0] <= rt60_range[1]:
        raise ValueError(f"rt60_range must satisfy 0 < low <= high (seconds), got {rt60_range}")
    cache = None
    if cache_dir is not None:
        tag = f"rirs-{kind}-n{n}-seed{seed}-sr{sample_rate}-rt{rt60_range[0]:g}-{rt60_range[1]:g}-order{max_order}"
        cache = Path(cache_dir) / f"{tag}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                flat, offsets = z["rirs"], z["offsets"]
            logger.info("loaded %d %s-room RIRs from %s", n, kind, cache)
            return [torch.from_numpy(flat[offsets[i] : offsets[i + 1]].copy()) for i in range(n)]
    kind_id = sorted(RIR_ROOM_SIZES).index(kind)
    rirs, infos = [], []
    for i in range(n):
        h, info = _simulate_one(np.random.default_rng([seed, kind_id, i]), kind, sample_rate, rt60_range, max_order)
        rirs.append(h)
        infos.append(info)
    rt = np.array([x["rt60"] for x in infos])
    logger.info(
        "simulated %d %s-room RIRs: RT60 %.2f–%.2f s (median %.2f s)", n, kind, rt.min(), rt.max(), np.median(rt)
    )
    if cache is not None:
        _save_npz(
            cache,
            rirs=np.concatenate(rirs),
            offsets=np.cumsum([0] + [len(h) for h in rirs]),
            **{k: np.array([x[k] for x in infos]) for k in infos[0]},
        )
    return [torch.from_numpy(h) for h in rirs]


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` atomically (temporary file in the same folder, then :func:`os.replace`)."""
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
    logger.info("cached %s", path)


# -------------------------------------------------------------------------------------------------- augmenter
@dataclass(frozen=True)
class AugmentChoice:
    """What :class:`Augmenter` does to one utterance.

    ``kind``: ``"none"``, ``"noise"``, ``"reverb"`` or ``"channel"``; for noise, ``category`` (one of
    :data:`CATEGORIES`), ``snr_db`` and ``num_babble`` (talkers, 0 without babble); for reverb, ``rir_index``; for
    channel, ``channel`` (:class:`svlib.data.channel.ChannelChoice`).
    """

    kind: str
    category: str | None = None
    snr_db: float | None = None
    num_babble: int = 0
    rir_index: int | None = None
    channel: ChannelChoice | None = None


class Augmenter:
    """Per-utterance augmentation of the recipe: none / additive noise / reverberation with p = 1/3 each (and,
    beyond the recipe, a simulated channel with ``p_channel``).

    Noise: category uniform over :data:`CATEGORIES`; babble is the sum of ``U{3..8}`` speech segments (sources
    drawn with replacement, random offsets), each scaled to unit power; ``babble_music`` adds a music segment at the same power as the babble; the resulting noise is
    added at an SNR ~ U(5, 20) dB, or U(15, 25) dB when babble is present (:func:`add_noise`, exact SNR).
    Reverberation: a uniformly chosen RIR, :func:`reverberate` (aligned to the direct path, same length and power).

    Args:
        noise_bank: noise / music / speech sources (needed when ``p_noise > 0``).
        rirs: impulse responses, tensors ``(K,)`` and/or paths (needed when ``p_reverb > 0``).
        p_none, p_noise, p_reverb: probabilities of the three outcomes (must sum to 1).
        seed: seed of the internal generator, used when a call passes no ``generator``.
        sample_rate: rate of the waveforms and sources.
        snr_range_db, babble_snr_range_db, babble_speakers: the recipe's ranges (see module constants).
        categories: the noise categories to draw from (uniformly).
        channel: the channel simulator of the ``"channel"`` outcome (needed when ``p_channel > 0``).
        p_channel: probability of a simulated channel (default 0, the recipe); ``p_none + p_noise + p_reverb +
            p_channel`` must be 1.
    """

    def __init__(
        self,
        noise_bank: NoiseBank | None,
        rirs: Sequence[Entry] | None,
        p_none: float = 1 / 3,
        p_noise: float = 1 / 3,
        p_reverb: float = 1 / 3,
        seed: int = 0,
        sample_rate: int = 16000,
        snr_range_db: tuple[float, float] = NOISE_SNR_RANGE_DB,
        babble_snr_range_db: tuple[float, float] = BABBLE_SNR_RANGE_DB,
        babble_speakers: tuple[int, int] = BABBLE_SPEAKERS,
        categories: Sequence[str] = CATEGORIES,
        channel: ChannelSimulator | None = None,
        p_channel: float = 0.0,
    ) -> None:
        probs = (p_none, p_noise, p_reverb) + ((p_channel,) if p_channel else ())
        if any(p < 0 for p in probs) or p_channel < 0 or abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(f"p_none, p_noise, p_reverb, p_channel must be >= 0 and sum to 1, got "
                             f"{(p_none, p_noise, p_reverb, p_channel)} (sum {sum(probs)})")
        if p_channel > 0 and channel is None:
            raise ValueError("p_channel > 0 needs a channel simulator (svlib.data.channel.ChannelSimulator)")
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown or not categories:
            raise ValueError(f"categories must be a non-empty subset of {CATEGORIES}, got {list(categories)}")
        if not 1 <= babble_speakers[0] <= babble_speakers[1]:
            raise ValueError(f"babble_speakers must satisfy 1 <= low <= high, got {babble_speakers}")
        for name, rng in (("snr_range_db", snr_range_db), ("babble_snr_range_db", babble_snr_range_db)):
            if rng[0] > rng[1]:
                raise ValueError(f"{name} must satisfy low <= high (dB), got {rng}")
        if p_noise > 0:
            if noise_bank is None:
                raise ValueError("p_noise > 0 needs a noise_bank (NoiseBank.from_musan or svlib.data.demo_noise.demo_noise_bank)")
            counts = noise_bank.counts()
            for c in categories:
                empty = [k for k in _CATEGORY_SOURCES[c] if counts[k] == 0]
                if empty:
                    raise ValueError(f"noise category {c!r} needs {empty} sources but the noise bank has {counts}")
        self.rirs = AudioPool(list(rirs or ()), sample_rate, cache_size=256)
        if p_reverb > 0 and len(self.rirs) == 0:
            raise ValueError("p_reverb > 0 needs at least one RIR (load_rirs or simulate_rirs)")
        self.noise_bank = noise_bank
        self.channel = channel
        self.probs = torch.tensor(probs, dtype=torch.float64)  # 3 outcomes, or 4 with a channel
        self.categories = tuple(categories)
        self.snr_range_db = snr_range_db
        self.babble_snr_range_db = babble_snr_range_db
        self.babble_speakers = babble_speakers
        self.sample_rate = sample_rate
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))

    def choose(self, generator: torch.Generator | None = None) -> AugmentChoice:
        """Draw the augmentation of one utterance (outcome, then category, talkers and SNR, or RIR)."""
        g = self.generator if generator is None else generator
        kind = ("none", "noise", "reverb", "channel")[int(torch.multinomial(self.probs, 1, generator=g))]
        if kind == "none":
            return AugmentChoice("none")
        if kind == "channel":
            return AugmentChoice("channel", channel=self.channel.choose(g))
        if kind == "reverb":
            return AugmentChoice("reverb", rir_index=int(torch.randint(0, len(self.rirs), (1,), generator=g)))
        category = self.categories[int(torch.randint(0, len(self.categories), (1,), generator=g))]
        babble = category in ("babble", "babble_music")
        num_babble = 0
        if babble:
            num_babble = int(torch.randint(self.babble_speakers[0], self.babble_speakers[1] + 1, (1,), generator=g))
        snr = self._uniform(*(self.babble_snr_range_db if babble else self.snr_range_db), g)
        return AugmentChoice("noise", category=category, snr_db=snr, num_babble=num_babble)

    def make_noise(
        self, choice: AugmentChoice, num_samples: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The ``(num_samples,)`` noise signal of a ``"noise"`` choice, before SNR scaling (see class docstring)."""
        g = self.generator if generator is None else generator
        bank = self.noise_bank

        def unit(x: torch.Tensor) -> torch.Tensor:
            p = _power(x)
            return x / p.sqrt().to(x.dtype) if p > 0 else x

        if choice.category in ("noise", "music"):
            return bank.segment(choice.category, num_samples, g)
        if choice.num_babble < 1:
            raise ValueError(f"category {choice.category!r} needs num_babble >= 1 talkers, got {choice.num_babble}")
        noise = sum(unit(bank.segment("speech", num_samples, g)) for _ in range(choice.num_babble))
        if choice.category == "babble_music":
            noise = unit(noise) + unit(bank.segment("music", num_samples, g))
        return noise

    def apply(self, wav: torch.Tensor, choice: AugmentChoice, generator: torch.Generator | None = None) -> torch.Tensor:
        """Apply ``choice`` to ``wav`` (``(N,)``); returns ``(N,)`` in ``wav``'s dtype."""
        if choice.kind == "none":
            return wav
        if choice.kind == "reverb":
            return reverberate(wav, self.rirs.load(choice.rir_index))
        if choice.kind == "channel":
            return apply_channel(wav, choice.channel, self.sample_rate)
        noise = self.make_noise(choice, wav.shape[-1], generator)
        return add_noise(wav, noise, choice.snr_db)

    def __call__(self, wav: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment one utterance ``(N,)``: draw a choice from ``generator`` (or the internal one) and apply it."""
        if wav.dim() != 1:
            raise ValueError(f"Augmenter expects one waveform (N,), got shape {tuple(wav.shape)}; use augment_batch")
        choice = self.choose(generator)
        return self.apply(wav, choice, generator)

    def augment_batch(self, wavs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment each row of ``wavs`` (``(B, N)``) independently; returns ``(B, N)``."""
        if wavs.dim() != 2:
            raise ValueError(f"augment_batch expects (B, N) waveforms, got shape {tuple(wavs.shape)}")
        return torch.stack([self(w, generator) for w in wavs])
