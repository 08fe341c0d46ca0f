"""The demo profile's offline stand-in for MUSAN, from Debian packages: real music, generated noise, babble.

- music: the five CC BY-SA 3.0 music-on-hold tracks of Debian's :data:`DEMO_MUSIC_PACKAGE` (raw G.722, decoded once
  with :func:`decode_g722` into 16-bit WAVs);
- noise: white / pink / brown noise (:func:`svlib.data.augment.coloured_noise`);
- speech: waveforms of training speakers (babble).

:func:`demo_noise_bank` returns them as a :class:`svlib.data.augment.NoiseBank`; the training loader uses it for
stage configs with ``augment: {demo: true}``. The real recipe reads MUSAN (:meth:`NoiseBank.from_musan`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from G722 import G722  # PyPI "G722" (sippy/libg722 bindings)

from svlib.core.paths import default_data_root
from svlib.data.augment import COLOURS, NoiseBank, coloured_noise
from svlib.data.debian import fetch_debian_package
from svlib.frontend.audio import resample, save_audio

logger = logging.getLogger(__name__)

__all__ = ["DEMO_MUSIC_PACKAGE", "decode_g722", "demo_music_files", "demo_noise_bank"]

DEMO_MUSIC_PACKAGE = "asterisk-moh-opsound-g722"
"""Debian package whose five CC BY-SA 3.0 music-on-hold tracks (raw G.722, 16 kHz) are the demo's music."""


def decode_g722(path: str | os.PathLike, sample_rate: int = 16000) -> torch.Tensor:
    """Decode a raw G.722 file (64 kbit/s, no header, 2 samples per byte at 16 kHz) to ``(N,)`` float32 in [-1, 1)."""
    path = Path(path)
    payload = path.read_bytes()
    if not payload:
        raise ValueError(f"{path}: empty G.722 file; expected raw 64 kbit/s G.722 data")
    pcm = np.asarray(G722(16000, 64000).decode(payload), dtype=np.int16)
    wav = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    return resample(wav, 16000, sample_rate)


def demo_music_files(root: str | os.PathLike | None = None, sample_rate: int = 16000) -> list[Path]:
    """The five music tracks of :data:`DEMO_MUSIC_PACKAGE` as 16-bit WAVs under ``root/demo_noise/music-<rate>``.

    Fetches the Debian package (about 8 MB) with :func:`svlib.data.debian.fetch_debian_package` and decodes each
    ``.g722`` once (idempotent; about 18 minutes of music in total).
    """
    root = Path(root) if root is not None else default_data_root()
    out = root / "demo_noise" / f"music-{sample_rate}"
    tracks = sorted((fetch_debian_package(DEMO_MUSIC_PACKAGE, root) / "usr/share/asterisk/moh").glob("*.g722"))
    if not tracks:
        raise FileNotFoundError(
            f"no .g722 tracks in {DEMO_MUSIC_PACKAGE} under {root}/pkgs; expected usr/share/asterisk/moh/*.g722"
        )
    files = []
    for track in tracks:
        wav_path = out / f"{track.stem}.wav"
        if not wav_path.is_file():
            save_audio(wav_path, decode_g722(track, sample_rate), sample_rate, subtype="PCM_16")
            logger.info("decoded %s -> %s", track.name, wav_path)
        files.append(wav_path)
    return files


def demo_noise_bank(
    root: str | os.PathLike | None = None,
    babble_sources: Sequence[torch.Tensor] = (),
    sample_rate: int = 16000,
    seed: int = 0,
    noise_per_colour: int = 2,
    noise_seconds: float = 10.0,
) -> NoiseBank:
    """An offline MUSAN stand-in: real music, generated coloured noise, babble from training speakers.

    - music: the five tracks of Debian's :data:`DEMO_MUSIC_PACKAGE` (:func:`demo_music_files`, CC BY-SA 3.0);
    - noise: ``noise_per_colour`` × white / pink / brown noise of ``noise_seconds`` s (:func:`coloured_noise`,
      seeded by ``seed``), in memory;
    - speech: ``babble_sources``, waveforms ``(N,)`` of training speakers (babble mixes 3–8 of them; with few
      speakers a crop's own speaker may be among the talkers, which MUSAN's separate speech set avoids).

    ``root`` defaults to :func:`svlib.core.paths.default_data_root`.
    """
    g = torch.Generator().manual_seed(seed)
    n = int(round(noise_seconds * sample_rate))
    noise = [coloured_noise(n, colour, g) for colour in COLOURS for _ in range(noise_per_colour)]
    music = demo_music_files(root, sample_rate)
    bank = NoiseBank(noise=noise, music=music, speech=list(babble_sources), sample_rate=sample_rate)
    logger.info("demo noise bank: %s", bank.counts())
    return bank
