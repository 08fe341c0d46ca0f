"""The demo's cross-channel trial list: the same trials, the test side heard through another channel.

Every demo speaker is one recording session on one channel, so the plain demo trials can be won by recognising
the recording (microphone, codec, room) instead of the voice. The cross-channel list keeps the plain list's trials
and labels, the enrolment side as recorded, and replaces each trial's test utterance by a copy passed through a
channel drawn for that utterance (fixed seed), one of :data:`PROTOCOL_CHANNELS`:

- ``narrowband``, ``g711`` (μ- or A-law), ``g722``, ``eq`` (a tilt of ±6 dB per three octaves): the recording
  chains of :mod:`svlib.data.channel`;
- ``noise``: white, pink or brown noise (:func:`svlib.data.augment.coloured_noise`) at an SNR drawn from
  U(5, 20) dB;
- ``reverb``: the impulse response of a simulated small or medium room (:func:`svlib.data.augment.simulate_rirs`,
  seeds that the demo's training augmentation does not use: :data:`RIR_SEED`).

:func:`build_cross_channel` writes ``<demo>/cross_channel/`` once (a finished marker keyed by the seed, the recipe
version and the plain list) and returns its :class:`CrossChannel`: a Kaldi data directory (``wav.scp``,
``utt2spk``: the clean enrolment utterances and the ``<utt>@<channel>`` test copies), ``trials.txt`` and
``channels.tsv`` (which channel, with its parameters, each test copy went through). ``svlib data demo`` builds it
next to the corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from svlib.core.atomic import file_lock
from svlib.core.progress import progress_bar
from svlib.data.augment import NOISE_SNR_RANGE_DB, add_noise, coloured_noise, reverberate, simulate_rirs
from svlib.data.channel import CHANNELS, TILT_RANGE_DB, ChannelChoice, ChannelSimulator, apply_channel
from svlib.data.demo import SAMPLE_RATE, CorpusSummary
from svlib.data.lists import DataDir, Trial, read_data_dir, read_trials, write_data_dir, write_lines_atomic, write_trials
from svlib.frontend.audio import load_audio, save_audio

logger = logging.getLogger(__name__)

__all__ = ["CROSS_CHANNEL_VERSION", "PROTOCOL_CHANNELS", "RIRS_PER_ROOM", "RIR_SEED", "CrossChannel",
           "build_cross_channel", "channel_tag", "protocol_rirs"]

CROSS_CHANNEL_VERSION = 2
"""Bumped when the protocol changes (part of the cache key)."""

PROTOCOL_CHANNELS: tuple[str, ...] = (*CHANNELS, "noise", "reverb")
"""The channels a test copy is drawn from, uniformly."""

RIR_SEED = 1000
"""Seed of the protocol's simulated rooms (plus the list's seed; small rooms, then medium ones at +1): the demo's
training augmentation simulates its rooms with the stage seed and the seed + 1 (42 and 43 by default,
:func:`svlib.data.loader.build_augmenter`), so the test rooms are other rooms."""

RIRS_PER_ROOM = 8
"""Simulated rooms of each size for the ``reverb`` channel."""
_COLOURS = ("white", "pink", "brown")


@dataclass(frozen=True)
class CrossChannel:
    """Paths of a built cross-channel list (inside ``<demo>/cross_channel``)."""

    root: str

    @property
    def data_dir(self) -> Path:
        """Kaldi data directory: ``wav.scp``, ``utt2spk``, ``spk2utt`` of the enrolment and test-copy utterances."""
        return Path(self.root)

    @property
    def trials(self) -> Path:
        return Path(self.root) / "trials.txt"

    @property
    def channels(self) -> Path:
        """``<test copy>\\t<channel>\\t<parameters>`` per line."""
        return Path(self.root) / "channels.tsv"

    def channel_counts(self) -> dict[str, int]:
        """How many test copies went through each channel."""
        counts: dict[str, int] = {}
        for line in self.channels.read_text().splitlines():
            kind = line.split("\t")[1]
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def channel_tag(utt: str, kind: str) -> str:
    """The id of the test copy of ``utt`` through ``kind``: ``<utt>@<kind>``."""
    return f"{utt}@{kind}"


def _draw(generator: torch.Generator, tilt_range_db: tuple[float, float], n_rirs: int) -> tuple[str, dict]:
    """One channel of the protocol, uniform over :data:`PROTOCOL_CHANNELS`, and its parameters."""
    kind = PROTOCOL_CHANNELS[int(torch.randint(0, len(PROTOCOL_CHANNELS), (1,), generator=generator))]
    if kind in CHANNELS:
        choice = ChannelSimulator(kinds=[kind], tilt_range_db=tilt_range_db).choose(generator)
        return kind, {k: v for k, v in (("law", choice.law), ("tilt_db", choice.tilt_db)) if v is not None}
    if kind == "noise":
        colour = _COLOURS[int(torch.randint(0, len(_COLOURS), (1,), generator=generator))]
        low, high = NOISE_SNR_RANGE_DB
        snr = low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))
        return kind, {"colour": colour, "snr_db": snr,
                      "noise_seed": int(torch.randint(0, 2**31 - 1, (1,), generator=generator))}
    return kind, {"rir": int(torch.randint(0, n_rirs, (1,), generator=generator))}


def _apply(wav: torch.Tensor, kind: str, params: dict, rirs: list[torch.Tensor]) -> torch.Tensor:
    if kind in CHANNELS:
        return apply_channel(wav, ChannelChoice(kind, **params))
    if kind == "noise":
        noise = coloured_noise(wav.shape[-1], params["colour"], torch.Generator().manual_seed(params["noise_seed"]))
        return add_noise(wav, noise, params["snr_db"])
    return reverberate(wav, rirs[params["rir"]])


def protocol_rirs(cache_dir: str | os.PathLike, seed: int = 0, rirs_per_room: int = RIRS_PER_ROOM) -> list[torch.Tensor]:
    """The ``reverb`` channel's impulse responses: ``rirs_per_room`` small rooms, then as many medium ones
    (:func:`svlib.data.augment.simulate_rirs`, seeds :data:`RIR_SEED` + ``seed`` and + 1, cached in ``cache_dir``)."""
    rirs = simulate_rirs(rirs_per_room, "small", seed=RIR_SEED + seed, cache_dir=cache_dir)
    return rirs + simulate_rirs(rirs_per_room, "medium", seed=RIR_SEED + seed + 1, cache_dir=cache_dir)


def _key(corpus: CorpusSummary, seed: int, rirs_per_room: int, tilt_range_db: tuple[float, float]) -> dict:
    digest = hashlib.sha256(Path(corpus.trials).read_bytes()).hexdigest()[:16]
    return {"version": CROSS_CHANNEL_VERSION, "seed": seed, "plain_trials": digest, "rirs_per_room": rirs_per_room,
            "tilt_range_db": list(tilt_range_db)}


def build_cross_channel(corpus: CorpusSummary, seed: int = 0, progress: bool = True,
                        tilt_range_db: tuple[float, float] = TILT_RANGE_DB,
                        rirs_per_room: int = RIRS_PER_ROOM) -> CrossChannel:
    """Build (or find cached) the cross-channel list of ``corpus`` under ``<corpus.root>/cross_channel``.

    Args:
        corpus: the demo corpus (:func:`svlib.data.demo.build_demo_corpus`).
        seed: fixes each test copy's channel and parameters and the simulated rooms.
        progress: show a tqdm bar while the copies are written.
        tilt_range_db: the ``eq`` channel's tilt range.
        rirs_per_room: simulated rooms of each size (small, medium) for the ``reverb`` channel.
    """
    out = Path(corpus.root) / "cross_channel"
    marker, key = out / ".svlib-finished", _key(corpus, seed, rirs_per_room, tilt_range_db)

    def cached() -> bool:
        return marker.is_file() and json.loads(marker.read_text()) == key

    if cached():
        return CrossChannel(str(out))
    with file_lock(Path(corpus.root) / ".cross_channel.lock"):
        if cached():
            return CrossChannel(str(out))
        if marker.exists():
            marker.unlink()
        shutil.rmtree(out / "wav", ignore_errors=True)  # copies of another seed or protocol version
        plain = read_trials(corpus.trials)
        test = read_data_dir(corpus.test_dir)
        rirs = protocol_rirs(Path(corpus.root) / "cross_channel_rirs", seed, rirs_per_room)
        generator = torch.Generator().manual_seed(seed)
        copies: dict[str, tuple[str, str, dict]] = {}  # test utt -> (copy id, kind, params)
        for utt in progress_bar(sorted({t.test for t in plain.trials}), desc="cross-channel copies", enabled=progress):
            kind, params = _draw(generator, tilt_range_db, len(rirs))
            copy = channel_tag(utt, kind)
            wav = _apply(load_audio(test.wav_scp[utt]), kind, params, rirs)
            peak = float(wav.abs().max())
            if peak > 0.99:  # noise and rooms can push a loud clip past full scale: keep it unclipped
                wav = wav * (0.99 / peak)
            save_audio(out / "wav" / f"{copy}.wav", wav, SAMPLE_RATE, subtype="PCM_16")
            copies[utt] = (copy, kind, params)
        enroll = sorted({t.enroll for t in plain.trials})
        wav_scp = {u: test.wav_scp[u] for u in enroll}
        wav_scp.update({c: str(out / "wav" / f"{c}.wav") for c, _, _ in copies.values()})
        utt2spk = {u: test.utt2spk[u] for u in enroll}
        utt2spk.update({c: test.utt2spk[u] for u, (c, _, _) in copies.items()})
        write_data_dir(DataDir(wav_scp, utt2spk), out)
        write_trials([Trial(t.enroll, copies[t.test][0], t.target) for t in plain.trials], out / "trials.txt")
        write_lines_atomic(out / "channels.tsv", (f"{c}\t{k}\t{json.dumps(p, sort_keys=True)}"
                                                  for c, k, p in sorted(copies.values())))
        write_lines_atomic(marker, [json.dumps(key)])
    logger.info("cross-channel list: %d trials, %d test copies in %s", len(plain.trials), len(copies), out)
    return CrossChannel(str(out))
