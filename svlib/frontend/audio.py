"""Audio I/O for svlib: validated loading, resampling and atomic saving of mono waveforms.

Every waveform that enters the speaker model goes through :func:`load_audio`, which returns a 1-D float32 tensor
``(num_samples,)`` at the requested sample rate (16 kHz for w2v-BERT 2.0). Problems with a file (missing, empty,
unreadable, non-finite samples, too short) raise :class:`AudioError`, whose message names the file, the problem and
what was expected, so that a bad file in a large list is easy to find.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF
from svlib.core.atomic import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["AudioError", "crop_or_loop", "file_identity", "load_audio", "one_waveform", "resample", "save_audio"]


class AudioError(ValueError):
    """An audio file that cannot be used: the message names the file, the problem and what was expected."""


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample ``wav`` (``(..., num_samples)``) from ``orig_sr`` to ``new_sr`` Hz (band-limited sinc, torchaudio).

    Returns the input unchanged when the rates are equal.
    """
    if int(orig_sr) <= 0 or int(new_sr) <= 0:
        raise ValueError(f"sample rates must be positive integers, got orig_sr={orig_sr}, new_sr={new_sr}")
    if int(orig_sr) == int(new_sr):
        return wav
    return AF.resample(wav, int(orig_sr), int(new_sr))


def file_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(resolved path, size, modification time in ns)``: the key under which svlib's in-memory caches keep what they
    decoded or computed from a file, so that a file written again is a new key."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_size, stat.st_mtime_ns


def load_audio(path: str | os.PathLike, sample_rate: int = 16000, min_duration: float = 0.1) -> torch.Tensor:
    """Load an audio file as a mono float32 waveform ``(num_samples,)`` at ``sample_rate`` Hz.

    Steps: 1. check the file exists and is not empty; 2. decode with soundfile (``always_2d``: ``(frames, channels)``);
    3. check it has samples and that they are finite; 4. mix channels by averaging; 5. resample if needed;
    6. check the duration is at least ``min_duration`` seconds.

    Raises:
        AudioError: for a missing, empty, unreadable or corrupt file, non-finite samples, or a too-short recording.
    """
    path = Path(path)
    # 1. existence and size
    if not path.is_file():
        raise AudioError(f"{path}: file not found (expected an existing audio file readable by soundfile)")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes; expected an audio file with at least one sample)")
    # 2. decode
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, TypeError) as err:
        raise AudioError(
            f"{path}: cannot decode audio ({err}); expected a format libsndfile reads (WAV, FLAC, OGG, ...)"
        ) from err
    # 3. samples present and finite
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{path}: no samples (0 frames; expected at least {min_duration} s of audio)")
    wav = torch.from_numpy(data)  # (frames, channels)
    if not torch.isfinite(wav).all():
        bad = int((~torch.isfinite(wav)).sum())
        raise AudioError(f"{path}: {bad} non-finite (NaN/inf) samples; expected finite sample values")
    # 4. mono mix
    wav = wav.mean(dim=1) if wav.shape[1] > 1 else wav[:, 0]
    # 5. resample
    if file_sr != sample_rate:
        logger.debug("resampling %s from %d Hz to %d Hz", path, file_sr, sample_rate)
        wav = resample(wav, file_sr, sample_rate)
    # 6. duration
    duration = wav.shape[0] / sample_rate
    if duration < min_duration:
        raise AudioError(
            f"{path}: too short ({duration:.3f} s = {wav.shape[0]} samples at {sample_rate} Hz; "
            f"expected at least {min_duration} s)"
        )
    return wav.contiguous().to(torch.float32)


def one_waveform(wav_or_path: torch.Tensor | str | os.PathLike) -> torch.Tensor:
    """One utterance as a ``(num_samples,)`` 16 kHz waveform: a path (read with :func:`load_audio`) or a 1-D tensor,
    whose shape is checked."""
    wav = load_audio(wav_or_path) if isinstance(wav_or_path, (str, os.PathLike)) else wav_or_path
    if wav.dim() != 1:
        raise ValueError(f"expected a 1-D waveform of shape (samples,), found {tuple(wav.shape)}")
    return wav


def save_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``wav`` (``(num_samples,)`` or ``(channels, num_samples)``) to ``path`` atomically.

    The audio is written to a temporary file in the destination directory and moved into place with
    :func:`os.replace`, so readers never see a half-written file. The format follows the file extension;
    ``subtype`` (e.g. ``"PCM_16"``, ``"FLOAT"``) defaults to soundfile's default for that format.
    """
    path = Path(path)
    wav = torch.as_tensor(wav).detach().to("cpu", torch.float32)
    if wav.dim() not in (1, 2):
        raise ValueError(f"save_audio expects (num_samples,) or (channels, num_samples), got shape {tuple(wav.shape)}")
    data = wav.numpy() if wav.dim() == 1 else wav.T.contiguous().numpy()  # soundfile wants (frames, channels)
    fmt = path.suffix.lstrip(".").upper() or None
    atomic_write(path, lambda tmp: sf.write(tmp, data, int(sample_rate), subtype=subtype, format=fmt), path.suffix)
    logger.debug("wrote %s (%d samples at %d Hz)", path, data.shape[0], sample_rate)
    return path


def crop_or_loop(wav: torch.Tensor, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A ``(num_samples,)`` piece of ``wav`` (``(N,)``): a uniformly random crop, or ``wav`` looped to length.

    - ``N > num_samples``: start offset uniform in ``[0, N - num_samples]`` (drawn from ``generator``);
    - ``N == num_samples``: ``wav`` unchanged (no draw);
    - ``N < num_samples``: ``wav`` repeated end to end from its start and cut at ``num_samples`` (no draw), as the
      recipe's "short audio is repeated".
    """
    if wav.dim() != 1:
        raise ValueError(f"crop_or_loop expects a 1-D waveform (N,), got shape {tuple(wav.shape)}")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    n = wav.shape[0]
    if n == 0:
        raise ValueError(f"cannot loop an empty waveform to {num_samples} samples")
    if n == num_samples:
        return wav
    if n < num_samples:
        repeats = -(-num_samples // n)  # ceil
        return wav.repeat(repeats)[:num_samples]
    start = int(torch.randint(0, n - num_samples + 1, (1,), generator=generator))
    return wav[start : start + num_samples]
